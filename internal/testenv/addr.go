package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a loopback address ("127.0.0.1:port") on which nothing listens now, for a
// server that binds it later: a raft peer list fixed before its nodes start, a node that
// restarts on the same address, a child process told where to listen.
//
// Listening on port 0 and closing would return a port of the kernel's ephemeral range, which
// any outgoing connection of any process (a database client, another test) can take as its
// local port before the server binds it; the server then fails with "address already in
// use" (seen in make test, a replica test's raft node). So the port is drawn at random from
// below that range (ip_local_port_range; ports under 10000 are left to services), where only
// an explicit bind takes a port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	low := ephemeralLow()
	if low <= minPort+1000 {
		// No room below the range: the old way, race and all.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	for range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", minPort+rand.IntN(low-minPort)))
		if err != nil {
			continue // taken
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		return addr
	}
	t.Fatalf("testenv: no free loopback port in [%d, %d) after 100 tries", minPort, low)
	return ""
}

// minPort is the lowest port FreeAddr hands out.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range: Linux's
// /proc/sys/net/ipv4/ip_local_port_range, else the IANA range's 49152.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 49152
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 49152
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 49152
	}
	return n
}
