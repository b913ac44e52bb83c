// Package faultproxy is test instrumentation: a userspace TCP proxy on 127.0.0.1 that sits on
// one link (a client's link to a server, or one peer's link to another) and injects network
// faults at run time, without iptables or privileges:
//
//   - Blackhole: connections are accepted and kept open, but the bytes of one direction (or
//     both) are read and thrown away, as when packets are lost. Nothing errors; the far side
//     just never hears anything, so only timeouts notice. A one-way blackhole is a one-way
//     partition.
//   - Delay: every chunk read in one direction is delivered a fixed time later, plus a uniformly
//     random jitter; order within a connection is kept (a chunk is never delivered before the one
//     read ahead of it), as TCP keeps it.
//   - DropConnections cuts every open connection (both sides see the close); SetRefuse makes the
//     proxy cut each new connection right after accepting it, as a peer that resets.
//   - Heal lifts blackhole, delay and refusal. It does not mend a connection that lost bytes in a
//     blackhole (TCP would have retransmitted them; this proxy cannot): callers that need a clean
//     stream after a heal call DropConnections as well, and the peers reconnect.
//
// The target can change at run time (SetTarget), so a test that restarts a server on a new port
// keeps the proxy's address for its clients.
//
// Every goroutine belongs to the proxy; Close stops them all and waits for them.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"time"
)

// Direction names one or both directions of a proxied link. "Forward" is what the dialing side
// (the client) sends towards the target; "Backward" is what the target sends back.
type Direction int

const (
	Forward  Direction = 1 << iota // client → target
	Backward                       // target → client
	Both     = Forward | Backward
)

func (d Direction) String() string {
	switch d {
	case 0:
		return "none"
	case Forward:
		return "forward"
	case Backward:
		return "backward"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// dialTimeout bounds the dial to the target: a target that does not answer (a killed server)
// must not hold the accepted connection for long.
const dialTimeout = 2 * time.Second

// chunkSize is the largest piece read from one side at a time.
const chunkSize = 32 << 10

// delaySpec is the delay of one direction.
type delaySpec struct{ fixed, jitter time.Duration }

// Proxy is one proxied link. The zero value is not usable; call New.
type Proxy struct {
	ln net.Listener
	wg sync.WaitGroup // the accept loop and every connection's goroutines

	mu        sync.Mutex
	target    string
	blackhole Direction
	delay     [2]delaySpec // indexed by dirIndex
	refuse    bool
	rng       *rand.Rand
	links     map[*link]struct{}
	closed    bool
	accepted  int
}

// New listens on 127.0.0.1:0 and forwards every accepted connection to target (host:port).
// seed drives the jitter, so a test's faults replay with its seed.
func New(target string, seed int64) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{
		ln:     ln,
		target: target,
		rng:    rand.New(rand.NewSource(seed)),
		links:  map[*link]struct{}{},
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address (host:port); clients dial it instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget changes where new connections go; open connections keep their old target.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Blackhole throws away, from now on, the bytes of the given directions on every connection,
// open and new. Blackhole(0) forwards again (Heal does too).
func (p *Proxy) Blackhole(d Direction) {
	p.mu.Lock()
	p.blackhole = d
	p.mu.Unlock()
}

// SetDelay delays every chunk read from now on in the given directions by fixed plus a
// uniformly random duration in [0, jitter). SetDelay(d, 0, 0) removes the delay of d.
func (p *Proxy) SetDelay(d Direction, fixed, jitter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, one := range []Direction{Forward, Backward} {
		if d&one != 0 {
			p.delay[dirIndex(one)] = delaySpec{fixed, jitter}
		}
	}
}

// SetRefuse makes the proxy close every new connection right after accepting it (on) or
// forward new connections again (off). Open connections are not touched.
func (p *Proxy) SetRefuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// DropConnections closes every open connection on both sides and returns how many it closed.
// New connections are accepted as before.
func (p *Proxy) DropConnections() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	return len(links)
}

// Heal lifts every fault: no blackhole, no delay, no refusal. Open connections stay open.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.blackhole = 0
	p.delay = [2]delaySpec{}
	p.refuse = false
	p.mu.Unlock()
}

// Accepted is the number of connections accepted so far (refused ones included).
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening, closes every connection and waits for all the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.DropConnections()
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (too many open files): back off a little and go on.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		p.accepted++
		refuse, target, closed := p.refuse, p.target, p.closed
		p.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c, target)
	}
}

// serve dials the target for one accepted connection and runs its two directions.
func (p *Proxy) serve(client net.Conn, target string) {
	defer p.wg.Done()
	upstream, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		client.Close() // the client sees its connection closed, as if the server had reset it
		return
	}
	l := &link{client: client, upstream: upstream, closed: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.pipe(l, Forward, client, upstream) }()
	go func() { defer dirs.Done(); p.pipe(l, Backward, upstream, client) }()
	dirs.Wait()
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// chunk is one piece of a stream with the time it may be delivered.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst for one direction, applying the faults in force when each chunk is
// read. A reader goroutine hands chunks to this goroutine, which writes each one at its time.
// At the end of src the write side of dst is closed (a half close), so request/response
// protocols that close their sending side still work through the proxy.
func (p *Proxy) pipe(l *link, d Direction, src, dst net.Conn) {
	queue := make(chan chunk, 64)
	done := make(chan struct{})
	var noFin bool // set before queue is closed: the end of src fell into a blackhole
	go func() {
		defer close(done)
		for c := range queue {
			if wait := time.Until(c.at); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-l.closed:
					t.Stop()
				}
			}
			select {
			case <-l.closed:
				// The link is closing: what is still queued is lost with it. (Written now, it
				// could reach a side that link.close has not closed yet.)
				for range queue {
				}
				return
			default:
			}
			if _, err := dst.Write(c.b); err != nil {
				l.close()
				for range queue { // let the reader finish; the close stops it
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok && !noFin {
			_ = tc.CloseWrite()
		}
	}()
	var prev time.Time
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			drop, at := p.fate(d, prev)
			if !drop {
				prev = at
				queue <- chunk{b: append([]byte(nil), buf[:n]...), at: at}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				noFin, _ = p.fate(d, prev) // a blackhole loses the FIN too
			} else {
				l.close()
			}
			break
		}
	}
	close(queue)
	<-done
}

// fate decides, for a chunk just read in direction d, whether the blackhole takes it and when
// it may be delivered (never before the previous chunk of the same direction).
func (p *Proxy) fate(d Direction, prev time.Time) (drop bool, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackhole&d != 0 {
		return true, time.Time{}
	}
	spec := p.delay[dirIndex(d)]
	delay := spec.fixed
	if spec.jitter > 0 {
		delay += time.Duration(p.rng.Int63n(int64(spec.jitter)))
	}
	at = time.Now().Add(delay)
	if at.Before(prev) {
		at = prev
	}
	return false, at
}

func dirIndex(d Direction) int {
	if d == Backward {
		return 1
	}
	return 0
}

// link is one proxied connection: the accepted client side and the dialed upstream side.
type link struct {
	client, upstream net.Conn
	once             sync.Once
	closed           chan struct{} // closed by close: pending delays end at once
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.closed)
		l.client.Close()
		l.upstream.Close()
	})
}
