// Command pause is the node e2e harness's sandbox image: the process that
// holds a pod's namespaces while its containers come and go. No image can be
// pulled on the test machines, so the harness builds this one (static, no
// cgo) and tags it as containerd's sandbox_image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		// As PID 1 of a pod that shares its process namespace, reap what
		// is orphaned to us.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
