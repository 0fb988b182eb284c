// Package testcluster runs a real etcd and kube-apiserver on loopback for
// integration tests, from the binaries hack/build-test-binaries.sh builds. The
// API server can be stopped and started again on the same port with the same
// certificates, so that tests can cut the agent off and bring the server back.
package testcluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nodeguard/nodeguard/internal/testproc"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// BinEnv names the directory holding kube-apiserver, etcd and kubectl.
// `make test` sets it; without it integration tests skip.
const BinEnv = "NODEGUARD_TEST_BIN"

// ErrNoBinaries means BinEnv is unset: the caller should skip.
var ErrNoBinaries = errors.New(BinEnv + " is not set: run `make test`, or hack/build-test-binaries.sh and export " + BinEnv + " to its output, to run tests against a real kube-apiserver")

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	Dir        string
	BinDir     string
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// APIPort is the API server's secure port on Host.
	APIPort int
	// Host is the address the API server listens on: 127.0.0.1 unless
	// Options say otherwise.
	Host string

	opts Options

	etcd      *testproc.Process
	apiserver *testproc.Process
	apiArgs   []string
	// CAFile, ClientCA signing pair: to mint more client certificates.
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// BinDir returns the test binaries' directory, or ErrNoBinaries.
func BinDir() (string, error) {
	dir := os.Getenv(BinEnv)
	if dir == "" {
		return "", ErrNoBinaries
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("%s=%s but %s is missing there (run hack/build-test-binaries.sh): %w", BinEnv, dir, name, err)
		}
	}
	return dir, nil
}

// Options change how the API server runs, for the node e2e harness, which
// runs a kubelet and controllers against it. The zero value is what
// integration tests use.
type Options struct {
	// Host and Port to serve on; 127.0.0.1 and a free port when empty.
	Host string
	Port int
	// ServiceCIDR is the Service IP range; the `kubernetes` Service takes
	// its first address, which pods reach the API server at.
	ServiceCIDR string
	// PodAdmission turns on the ServiceAccount admission plugin (pods get
	// projected tokens) and NodeRestriction, as a real cluster has them.
	PodAdmission bool
	// ExtraArgs are appended to kube-apiserver's arguments.
	ExtraArgs []string
}

// Start starts etcd and kube-apiserver in a new temporary directory and waits
// until the API server is ready.
func Start() (*Cluster, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nodeguard-testcluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, BinDir: bin, opts: opts, Host: opts.Host}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if err := c.start(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start() error {
	ports, err := FreePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer := ports[0], ports[1]
	c.APIPort = ports[2]
	if c.opts.Port != 0 {
		c.APIPort = c.opts.Port
	}
	etcd := exec.Command(filepath.Join(c.BinDir, "etcd"),
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+loopURL(etcdClient),
		"--advertise-client-urls="+loopURL(etcdClient),
		"--listen-peer-urls="+loopURL(etcdPeer),
		"--initial-advertise-peer-urls="+loopURL(etcdPeer),
		"--initial-cluster=default="+loopURL(etcdPeer),
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	if c.etcd, err = c.spawn(etcd, "etcd.log"); err != nil {
		return err
	}
	if err := waitHTTP(loopURL(etcdClient)+"/health", nil, 30*time.Second); err != nil {
		return fmt.Errorf("etcd did not become healthy: %w; log:\n%s", err, c.tail("etcd.log"))
	}
	if err := c.writeCerts(); err != nil {
		return err
	}
	p := func(name string) string { return filepath.Join(c.Dir, name) }
	serviceCIDR := c.opts.ServiceCIDR
	if serviceCIDR == "" {
		serviceCIDR = "10.0.0.0/24"
	}
	admission := []string{
		// Pods made by tests need no ServiceAccount object.
		"--disable-admission-plugins=ServiceAccount",
	}
	if c.opts.PodAdmission {
		admission = []string{"--enable-admission-plugins=NodeRestriction"}
	}
	c.apiArgs = []string{
		"--etcd-servers=" + loopURL(etcdClient),
		"--bind-address=" + c.Host,
		"--advertise-address=" + c.Host,
		"--secure-port=" + strconv.Itoa(c.APIPort),
		"--cert-dir=" + p("apiserver-certs"),
		"--tls-cert-file=" + p("serving.crt"),
		"--tls-private-key-file=" + p("serving.key"),
		"--client-ca-file=" + p("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// A loopback advertise address is refused by the endpoint reconciler.
		"--endpoint-reconciler-type=none",
		"--v=0",
	}
	c.apiArgs = append(c.apiArgs, admission...)
	// For the logs, exec and port-forward of a real kubelet's pods.
	c.apiArgs = append(c.apiArgs, "--kubelet-client-certificate="+p("kubelet-client.crt"), "--kubelet-client-key="+p("kubelet-client.key"))
	c.apiArgs = append(c.apiArgs, c.opts.ExtraArgs...)
	if err := c.StartAPIServer(); err != nil {
		return err
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	return err
}

// StartAPIServer starts kube-apiserver (again) with the same port and
// certificates and waits until it is ready.
func (c *Cluster) StartAPIServer() error { return c.StartAPIServerWithin(apiServerReady) }

// apiServerReady is how long StartAPIServer waits for readiness.
const apiServerReady = 90 * time.Second

// StartAPIServerWithin is StartAPIServer waiting up to ready: a server
// restarted under thousands of clients at once (hack/bench's recovery
// storm) takes longer than a test's.
func (c *Cluster) StartAPIServerWithin(ready time.Duration) error {
	var err error
	c.apiserver, err = c.spawn(exec.Command(filepath.Join(c.BinDir, "kube-apiserver"), c.apiArgs...), "kube-apiserver.log")
	if err != nil {
		return err
	}
	tlsConfig, err := rest.TLSConfigFor(c.Config)
	if err != nil {
		return err
	}
	url := c.URL() + "/readyz"
	if err := waitHTTP(url, &http.Transport{TLSClientConfig: tlsConfig}, ready); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready: %w; log:\n%s", err, c.tail("kube-apiserver.log"))
	}
	return nil
}

// StopAPIServer stops kube-apiserver and waits for it to exit; etcd keeps
// running, so the cluster's objects survive.
func (c *Cluster) StopAPIServer() error {
	c.apiserver.Stop(stopGrace)
	return nil
}

// KillAPIServer kills kube-apiserver at once, as a crash or a lost control
// plane would: no drain, in which the server refuses new requests while
// open watches stay quiet.
func (c *Cluster) KillAPIServer() error {
	c.apiserver.Stop(0)
	return nil
}

// Stop stops everything and removes the directory.
func (c *Cluster) Stop() {
	c.apiserver.Stop(stopGrace)
	c.etcd.Stop(stopGrace)
	if os.Getenv("NODEGUARD_KEEP_TESTCLUSTER") == "" {
		os.RemoveAll(c.Dir)
	}
}

// stopGrace is how long a server has to exit after SIGTERM.
const stopGrace = 15 * time.Second

// URL is the API server's address.
func (c *Cluster) URL() string { return "https://" + net.JoinHostPort(c.Host, strconv.Itoa(c.APIPort)) }

// CAFile is the cluster CA's certificate: it signs the API server's serving
// certificate and every client certificate minted here.
func (c *Cluster) CAFile() string { return filepath.Join(c.Dir, "ca.crt") }

// ServiceAccountKeyFile is the private key service-account tokens are
// signed with.
func (c *Cluster) ServiceAccountKeyFile() string { return filepath.Join(c.Dir, "sa.key") }

// APIServerLog returns the end of kube-apiserver's log, for failure messages.
func (c *Cluster) APIServerLog() string { return c.tail("kube-apiserver.log") }

func (c *Cluster) spawn(cmd *exec.Cmd, logName string) (*testproc.Process, error) {
	return testproc.Start(cmd, filepath.Join(c.Dir, logName))
}

func (c *Cluster) tail(logName string) string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, logName))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func loopURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }

// FreePorts returns n ports free on 127.0.0.1 at the time of asking.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitHTTP(url string, transport *http.Transport, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if transport != nil {
		client.Transport = transport
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("after %s: %w", timeout, last)
}

// writeCerts makes a CA, the API server's serving certificate, an admin
// client certificate (group system:masters), the service-account key pair,
// and a kubeconfig for the admin.
func (c *Cluster) writeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nodeguard-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	c.caCert, _ = x509.ParseCertificate(caDER)
	c.caKey = caKey
	if err := writePEM(filepath.Join(c.Dir, "ca.crt"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	servingDER, servingKey, err := c.issue(pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(c.Dir, "serving.crt"), "CERTIFICATE", servingDER); err != nil {
		return err
	}
	if err := writeKey(filepath.Join(c.Dir, "serving.key"), servingKey); err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(c.Dir, "sa.pub"), "PUBLIC KEY", saPub); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(c.Dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return err
	}
	if err := c.WriteClientCert("kube-apiserver-kubelet-client", []string{"system:masters"}, filepath.Join(c.Dir, "kubelet-client.crt"), filepath.Join(c.Dir, "kubelet-client.key")); err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	c.Config, err = c.UserConfig("admin", []string{"system:masters"}, c.Kubeconfig)
	return err
}

// UserConfig mints a client certificate for user in groups and returns a
// rest.Config for it; when path is set it also writes a kubeconfig there.
func (c *Cluster) UserConfig(user string, groups []string, path string) (*rest.Config, error) {
	der, key, err := c.issue(pkix.Name{CommonName: user, Organization: groups}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.caCert.Raw})
	host := c.URL()
	if path != "" {
		kc := clientcmdapi.NewConfig()
		kc.Clusters["test"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: caPEM}
		kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
		kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
		kc.CurrentContext = "test"
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			return nil, err
		}
	}
	return &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM, CertData: certPEM, KeyData: keyPEM},
		QPS:             100, Burst: 200,
	}, nil
}

// WriteClientCert mints a client certificate for user in groups and writes
// it and its key as PEM files.
func (c *Cluster) WriteClientCert(user string, groups []string, certPath, keyPath string) error {
	der, key, err := c.issue(pkix.Name{CommonName: user, Organization: groups}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(keyPath, key)
}

func (c *Cluster) issue(subject pkix.Name, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(c.Host)}
		tmpl.DNSNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, &key.PublicKey, c.caKey)
	return der, key, err
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

// Kubectl runs the test kubectl against the cluster and returns its
// combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	bin := filepath.Join(c.BinDir, "kubectl")
	if _, err := os.Stat(bin); err != nil {
		if p, lerr := exec.LookPath("kubectl"); lerr == nil {
			bin = p
		} else {
			return "", fmt.Errorf("no kubectl in %s or on PATH: %w", c.BinDir, err)
		}
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
