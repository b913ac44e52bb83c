package offsetdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// ZooKeeperStore keeps offsets in znodes, one per partition:
//
//	<root>/consumers/<group>/offsets/<topic>/<partition>
//
// the MetaQ (and classic Kafka) layout. The data is a small JSON document,
// readable with `get` in zkCli.sh:
//
//	{"next_offset":1042,"committed_by":"member-1","committed_at":"2024-11-25T03:12:00.123Z"}
//
// A plain decimal ("1042"), as written by older MetaQ-style tools, is read too.
// A batch is written with a compare-and-set: every znode is read with its
// version, and one ZooKeeper multi (one transaction) sets all those that do
// not move backwards, each conditioned on the version read; if another writer
// got in between, the multi fails as a whole and is retried with fresh reads.
// A call returns when ctx ends even if ZooKeeper has not answered (the link
// is down and the client is still reconnecting, which can take ten times the
// session timeout): the request may still be sent once the link is back, and
// its outcome is unknown. For Commit that is harmless, as every write is
// conditioned on the version read (a late multi fails if anything was written
// since, and never moves an offset backwards). Reset, an unconditional set, is
// not cut short by ctx: a late one could move back an offset committed since.
type ZooKeeperStore struct {
	closeGuard
	conn    *zk.Conn
	servers []string
	root    string
	log     *slog.Logger

	mu      sync.Mutex
	parents map[string]bool // znodes known to exist

	beforeMulti func() // tests: called just before a commit's multi is sent
}

// zkSessionTimeout is the session timeout asked of ZooKeeper.
const zkSessionTimeout = 10 * time.Second

// zkCASAttempts bounds the compare-and-set retries of one batch.
const zkCASAttempts = 50

type zkData struct {
	Next        int64     `json:"next_offset"`
	CommittedBy string    `json:"committed_by,omitempty"`
	CommittedAt time.Time `json:"committed_at"`
}

// OpenZooKeeper connects to cfg.ZooKeeper and makes sure <root>/consumers exists.
func OpenZooKeeper(ctx context.Context, cfg Config) (*ZooKeeperStore, error) {
	if len(cfg.ZooKeeper) == 0 {
		return nil, errors.New("offsetdb: zookeeper: no servers (Config.ZooKeeper)")
	}
	root := cfg.Root
	if root == "" {
		root = "/imago"
	}
	if !strings.HasPrefix(root, "/") || (len(root) > 1 && strings.HasSuffix(root, "/")) {
		return nil, fmt.Errorf("offsetdb: zookeeper: root %q must start and must not end with '/'", root)
	}
	log := cfg.logger()
	session := zkSessionTimeout
	if cfg.zkSessionTimeout > 0 {
		session = cfg.zkSessionTimeout
	}
	conn, _, err := zk.Connect(cfg.ZooKeeper, session, zk.WithLogger(zkLogger{log}), zk.WithLogInfo(false))
	if err != nil {
		return nil, fmt.Errorf("offsetdb: zookeeper %v: %w", cfg.ZooKeeper, err)
	}
	for conn.State() != zk.StateHasSession {
		select {
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("offsetdb: zookeeper %v: no session: %w", cfg.ZooKeeper, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	s := &ZooKeeperStore{conn: conn, servers: cfg.ZooKeeper, root: path.Clean(root), log: log, parents: make(map[string]bool)}
	if err := s.ensure(ctx, path.Join(s.root, "consumers")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("offsetdb: zookeeper: %w", err)
	}
	return s, nil
}

// zkCall runs f, a call on the ZooKeeper connection, and returns when it answers or when
// ctx ends, whichever is first. go-zookeeper's calls take no context: a request made while
// the link is down waits in the client's queue until the client reconnects or gives up,
// which against a server that accepts connections but does not answer is ten times the
// session timeout. The abandoned call ends when the client answers it (at the latest at
// Close); callers only abandon calls that are harmless to run late.
func zkCall[T any](ctx context.Context, conn *zk.Conn, f func() (T, error)) (T, error) {
	if ctx.Done() == nil {
		return f()
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("no answer from ZooKeeper (client state %v): %w", conn.State(), ctx.Err())
	}
}

// get reads a znode, bounded by ctx.
func (s *ZooKeeperStore) get(ctx context.Context, p string) ([]byte, *zk.Stat, error) {
	type got struct {
		data []byte
		st   *zk.Stat
	}
	g, err := zkCall(ctx, s.conn, func() (got, error) {
		data, st, err := s.conn.Get(p)
		return got{data, st}, err
	})
	return g.data, g.st, err
}

// syncRead makes the reads that follow on this session see every write the ZooKeeper ensemble
// had committed when it is called (ZooKeeper's sync). A session reads from the server it is
// connected to, which may lag the ensemble's leader; this session's own writes are always
// visible to it, but in a cluster the offsets a former Imago leader committed through its own
// session are not, and a new leader that read a lagging server would start its members at
// offsets already passed (messages delivered again). Get and List, which start partitions and
// report offsets, sync first: one round trip to the ensemble's leader per call.
func (s *ZooKeeperStore) syncRead(ctx context.Context, p string) error {
	_, err := zkCall(ctx, s.conn, func() (string, error) { return s.conn.Sync(p) })
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	return err
}

// children lists a znode's children, bounded by ctx.
func (s *ZooKeeperStore) children(ctx context.Context, p string) ([]string, error) {
	return zkCall(ctx, s.conn, func() ([]string, error) {
		kids, _, err := s.conn.Children(p)
		return kids, err
	})
}

// zkLogger routes go-zookeeper's log lines to slog.
type zkLogger struct{ log *slog.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Info("zookeeper: " + fmt.Sprintf(format, args...))
}

func (s *ZooKeeperStore) znode(k Key) string {
	return path.Join(s.root, "consumers", k.Group, "offsets", k.Topic, strconv.Itoa(k.Partition))
}

// ensure creates p and its parents if missing (persistent, open ACL).
func (s *ZooKeeperStore) ensure(ctx context.Context, p string) error {
	s.mu.Lock()
	known := s.parents[p]
	s.mu.Unlock()
	if known {
		return nil
	}
	cur := ""
	for _, part := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		cur += "/" + part
		_, err := zkCall(ctx, s.conn, func() (string, error) { return s.conn.Create(cur, nil, 0, zk.WorldACL(zk.PermAll)) })
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create %s: %w", cur, err)
		}
	}
	s.mu.Lock()
	s.parents[p] = true
	s.mu.Unlock()
	return nil
}

type zkRead struct {
	cur     Offset
	exists  bool
	version int32
	err     error
}

// read gets the znodes of rows concurrently (the connection pipelines them).
func (s *ZooKeeperStore) read(ctx context.Context, rows []Offset) []zkRead {
	out := make([]zkRead, len(rows))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, o := range rows {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			data, st, err := s.get(ctx, s.znode(o.Key()))
			switch {
			case errors.Is(err, zk.ErrNoNode):
			case err != nil:
				out[i].err = err
			default:
				out[i].exists, out[i].version = true, st.Version
				out[i].cur, out[i].err = decodeZkData(o.Key(), data, st)
			}
		}()
	}
	wg.Wait()
	return out
}

func decodeZkData(k Key, data []byte, st *zk.Stat) (Offset, error) {
	o := Offset{Group: k.Group, Topic: k.Topic, Partition: k.Partition}
	if st != nil {
		o.CommittedAt = time.UnixMilli(st.Mtime).UTC()
	}
	text := strings.TrimSpace(string(data))
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		o.Next = n
		return o, nil
	}
	var d zkData
	if err := json.Unmarshal(data, &d); err != nil {
		return o, fmt.Errorf("znode of %s/%s/%d holds neither JSON nor a number: %q", k.Group, k.Topic, k.Partition, text)
	}
	o.Next, o.CommittedBy = d.Next, d.CommittedBy
	if !d.CommittedAt.IsZero() {
		o.CommittedAt = d.CommittedAt.UTC()
	}
	return o, nil
}

func encodeZkData(o Offset) []byte {
	b, _ := json.Marshal(zkData{Next: o.Next, CommittedBy: o.CommittedBy, CommittedAt: o.CommittedAt.UTC()})
	return b
}

// Commit writes the batch with one versioned multi, retried on conflict.
func (s *ZooKeeperStore) Commit(ctx context.Context, offsets []Offset) error {
	if err := s.check(); err != nil {
		return err
	}
	rows, err := Coalesce(offsets)
	if err != nil || len(rows) == 0 {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		reads := s.read(ctx, rows)
		now := time.Now().UTC()
		var ops []any
		for i, o := range rows {
			r := reads[i]
			if r.err != nil {
				return fmt.Errorf("offsetdb: zookeeper: read %s: %w", s.znode(o.Key()), r.err)
			}
			o.CommittedAt = now
			switch {
			case r.exists && o.Next < r.cur.Next:
				// Never backwards: nothing to write.
			case r.exists:
				ops = append(ops, &zk.SetDataRequest{Path: s.znode(o.Key()), Data: encodeZkData(o), Version: r.version})
			default:
				if err := s.ensure(ctx, path.Dir(s.znode(o.Key()))); err != nil {
					return fmt.Errorf("offsetdb: zookeeper: %w", err)
				}
				ops = append(ops, &zk.CreateRequest{Path: s.znode(o.Key()), Data: encodeZkData(o), Acl: zk.WorldACL(zk.PermAll)})
			}
		}
		if len(ops) == 0 {
			return nil
		}
		if s.beforeMulti != nil {
			s.beforeMulti()
		}
		res, err := zkCall(ctx, s.conn, func() ([]zk.MultiResponse, error) { return s.conn.Multi(ops...) })
		if err == nil {
			for _, r := range res {
				if r.Error != nil {
					err = r.Error
					break
				}
			}
		}
		if err == nil {
			return nil
		}
		if !zkConflict(err, res) || attempt+1 >= zkCASAttempts {
			return fmt.Errorf("offsetdb: zookeeper: commit %d offsets (attempt %d): %w", len(ops), attempt+1, err)
		}
		if errors.Is(err, zk.ErrNoNode) {
			// A parent was deleted under us (group deleted): forget the cache.
			s.mu.Lock()
			clear(s.parents)
			s.mu.Unlock()
		}
	}
}

// zkConflict reports whether a failed multi lost a race (and a retry with
// fresh reads may succeed).
func zkConflict(err error, res []zk.MultiResponse) bool {
	conflict := func(e error) bool {
		return errors.Is(e, zk.ErrBadVersion) || errors.Is(e, zk.ErrNodeExists) || errors.Is(e, zk.ErrNoNode)
	}
	if conflict(err) {
		return true
	}
	return slices.ContainsFunc(res, func(r zk.MultiResponse) bool { return conflict(r.Error) })
}

// Get returns one partition's offset.
func (s *ZooKeeperStore) Get(ctx context.Context, group, topic string, partition int) (Offset, bool, error) {
	if err := s.check(); err != nil {
		return Offset{}, false, err
	}
	k := Key{group, topic, partition}
	if err := s.syncRead(ctx, s.znode(k)); err != nil {
		return Offset{}, false, fmt.Errorf("offsetdb: zookeeper: sync before reading %s: %w", s.znode(k), err)
	}
	data, st, err := s.get(ctx, s.znode(k))
	if errors.Is(err, zk.ErrNoNode) {
		return Offset{}, false, nil
	}
	if err != nil {
		return Offset{}, false, fmt.Errorf("offsetdb: zookeeper: get %s: %w", s.znode(k), err)
	}
	o, err := decodeZkData(k, data, st)
	if err != nil {
		return Offset{}, false, fmt.Errorf("offsetdb: zookeeper: %w", err)
	}
	return o, true, nil
}

// List returns a group's offsets.
func (s *ZooKeeperStore) List(ctx context.Context, group string) ([]Offset, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	base := path.Join(s.root, "consumers", group, "offsets")
	if err := s.syncRead(ctx, base); err != nil {
		return nil, fmt.Errorf("offsetdb: zookeeper: sync before listing %s: %w", base, err)
	}
	topics, err := s.children(ctx, base)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("offsetdb: zookeeper: list %s: %w", base, err)
	}
	var keys []Offset
	for _, t := range topics {
		parts, err := s.children(ctx, path.Join(base, t))
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("offsetdb: zookeeper: list %s: %w", path.Join(base, t), err)
		}
		for _, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 {
				continue // not ours
			}
			keys = append(keys, Offset{Group: group, Topic: t, Partition: n})
		}
	}
	slices.SortFunc(keys, func(a, b Offset) int { return compareKeys(a.Key(), b.Key()) })
	reads := s.read(ctx, keys)
	out := make([]Offset, 0, len(keys))
	for _, r := range reads {
		if r.err != nil {
			return nil, fmt.Errorf("offsetdb: zookeeper: list %s: %w", group, r.err)
		}
		if r.exists {
			out = append(out, r.cur)
		}
	}
	return out, nil
}

// Groups returns the groups under <root>/consumers that have offsets (a group
// may also have only membership znodes, written by package cluster).
func (s *ZooKeeperStore) Groups(ctx context.Context) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	base := path.Join(s.root, "consumers")
	groups, err := s.children(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("offsetdb: zookeeper: groups: %w", err)
	}
	var out []string
	for _, g := range groups {
		ok, err := zkCall(ctx, s.conn, func() (bool, error) {
			ok, _, err := s.conn.Exists(path.Join(base, g, "offsets"))
			return ok, err
		})
		if err != nil {
			return nil, fmt.Errorf("offsetdb: zookeeper: groups: %w", err)
		}
		if ok {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Reset sets an offset, backwards included (an unconditional set).
func (s *ZooKeeperStore) Reset(ctx context.Context, group, topic string, partition int, next int64) error {
	if err := s.check(); err != nil {
		return err
	}
	o := Offset{Group: group, Topic: topic, Partition: partition, Next: next, CommittedBy: ResetBy, CommittedAt: time.Now().UTC()}
	if err := validate(o); err != nil {
		return err
	}
	p := s.znode(o.Key())
	for range zkCASAttempts {
		_, err := s.conn.Set(p, encodeZkData(o), -1)
		if errors.Is(err, zk.ErrNoNode) {
			if err := s.ensure(ctx, path.Dir(p)); err != nil {
				return fmt.Errorf("offsetdb: zookeeper: reset: %w", err)
			}
			_, err = s.conn.Create(p, encodeZkData(o), 0, zk.WorldACL(zk.PermAll))
			if errors.Is(err, zk.ErrNodeExists) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("offsetdb: zookeeper: reset %s: %w", p, err)
		}
		s.log.Info("offset reset", "group", group, "topic", topic, "partition", partition, "offset", next)
		return nil
	}
	return fmt.Errorf("offsetdb: zookeeper: reset %s: too many conflicts", p)
}

// zkPingTimeout bounds Ping's read of the root znode.
const zkPingTimeout = 2 * time.Second

// Ping reports whether the store can reach ZooKeeper now (for /readyz): the client must hold
// a session, and a read of the root znode must answer within ctx and zkPingTimeout. While it
// fails, commits fail too.
func (s *ZooKeeperStore) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	if st := s.conn.State(); st != zk.StateHasSession {
		return fmt.Errorf("offsetdb: zookeeper %v: no session (client state %v)", s.servers, st)
	}
	ctx, cancel := context.WithTimeout(ctx, zkPingTimeout)
	defer cancel()
	if _, err := zkCall(ctx, s.conn, func() (bool, error) {
		ok, _, err := s.conn.Exists(s.root)
		return ok, err
	}); err != nil {
		return fmt.Errorf("offsetdb: zookeeper %v: read %s: %w", s.servers, s.root, err)
	}
	return nil
}

// Close ends the ZooKeeper session.
func (s *ZooKeeperStore) Close() error {
	if !s.close() {
		return nil
	}
	s.conn.Close()
	return nil
}
