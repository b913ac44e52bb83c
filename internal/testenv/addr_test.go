package testenv

import (
	"net"
	"strconv"
	"testing"
)

// The port is free (a listen on it succeeds) and below the ephemeral range, where outgoing
// connections cannot take it.
func TestFreeAddrBelowEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		addr := FreeAddr(t)
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if low > minPort+1000 && (port < minPort || port >= low) {
			t.Fatalf("FreeAddr gave %s: want a port in [%d, %d)", addr, minPort, low)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr gave %s, which cannot be listened on: %v", addr, err)
		}
		ln.Close()
	}
}
