package testnode

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// Through the relay a line goes and comes back; black-holed, the
// connection stays open and nothing comes back, on it or on a new one;
// healed, what was held arrives.
func TestRelayBlackholesAndHeals(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					c.Write(append(s.Bytes(), '\n'))
				}
			}()
		}
	}()
	r, err := NewRelay("127.0.0.1:0", echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	roundTrip := func(c net.Conn, rd *bufio.Reader, line string, wait time.Duration) (string, error) {
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		return rd.ReadString('\n')
	}
	c, rd := dial()
	if got, err := roundTrip(c, rd, "one", 5*time.Second); err != nil || got != "one\n" {
		t.Fatalf("through the relay: %q, %v", got, err)
	}
	r.Blackhole()
	if got, err := roundTrip(c, rd, "two", 300*time.Millisecond); err == nil {
		t.Fatalf("black-holed, the open connection still answered %q", got)
	}
	c2, rd2 := dial()
	if got, err := roundTrip(c2, rd2, "three", 300*time.Millisecond); err == nil {
		t.Fatalf("black-holed, a new connection answered %q", got)
	}
	r.Heal()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := rd.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("healed, the held line came back as %q, %v", got, err)
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := rd2.ReadString('\n'); err != nil || got != "three\n" {
		t.Fatalf("healed, the new connection's line came back as %q, %v", got, err)
	}
}
