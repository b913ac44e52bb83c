package offsetdb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/migrations"
)

// Store keeps consumer offsets. All methods are safe for concurrent use.
type Store interface {
	// Commit records the offsets. For each (group, topic, partition) the stored
	// offset becomes the greater of the stored and the committed one: a commit
	// never moves an offset backwards. It returns after the offsets are durable
	// (fsync'd, or committed in the database); on error none of them may be.
	Commit(ctx context.Context, offsets []Offset) error
	// Get returns the committed offset of a partition, and false if the group
	// never committed one there.
	Get(ctx context.Context, group, topic string, partition int) (Offset, bool, error)
	// List returns the group's committed offsets, sorted by topic and partition,
	// with CommittedAt set.
	List(ctx context.Context, group string) ([]Offset, error)
	// Groups returns the names of the groups that have committed offsets, sorted.
	Groups(ctx context.Context) ([]string, error)
	// Reset sets a partition's offset to next, backwards included: the one
	// operation that may move an offset back (`imago groups reset`). It is meant
	// for a group with no active consumers: a consumer still committing moves
	// the offset forward again. The Batcher writes every commit already queued
	// before the reset.
	Reset(ctx context.Context, group, topic string, partition int, next int64) error
	// Close releases the store. Commits waiting in a Batcher are flushed first.
	Close() error
}

// Offset is the committed position of a group in one topic partition.
type Offset struct {
	Group     string
	Topic     string
	Partition int
	// Next is the offset of the next message to consume.
	Next int64
	// CommittedBy names who committed (member id, client id); free text.
	CommittedBy string
	// CommittedAt is when the stored value was last written; set by List and
	// Get, ignored by Commit (the store uses its own clock, UTC).
	CommittedAt time.Time
}

// Key identifies the row or node an offset lives in.
type Key struct {
	Group     string
	Topic     string
	Partition int
}

// Key returns the offset's key.
func (o Offset) Key() Key { return Key{o.Group, o.Topic, o.Partition} }

func compareKeys(a, b Key) int {
	return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// Errors callers branch on.
var (
	// ErrClosed is returned by a Store used after Close.
	ErrClosed = errors.New("offsetdb: store closed")
	// ErrInvalidOffset is returned for an offset with an empty group or
	// topic, a negative partition or a negative offset.
	ErrInvalidOffset = errors.New("offsetdb: invalid offset")
)

// Limits of names, the same in every store (the MySQL columns are VARCHAR(255)).
const maxNameLen = 255

// closeGuard makes a store's methods fail with ErrClosed after Close.
type closeGuard struct{ closed atomic.Bool }

func (g *closeGuard) check() error {
	if g.closed.Load() {
		return ErrClosed
	}
	return nil
}

// close reports whether this call closed it (false if already closed).
func (g *closeGuard) close() bool { return g.closed.CompareAndSwap(false, true) }

// validate checks an offset about to be written: validStored, and no group or topic named "."
// or "..", which the ZooKeeper store's paths would resolve away (group ".." lands beside the
// offsets node); refused in every store alike, as the doors refuse such names.
func validate(o Offset) error {
	if err := validStored(o); err != nil {
		return err
	}
	if o.Group == "." || o.Group == ".." || o.Topic == "." || o.Topic == ".." {
		return fmt.Errorf("%w: group %q / topic %q: \".\" and \"..\" are reserved names", ErrInvalidOffset, o.Group, o.Topic)
	}
	return nil
}

// validStored checks an offset read back from a file store. An offset an earlier version
// stored under a reserved name stays readable: refusing it would stop the store's start.
func validStored(o Offset) error {
	switch {
	case o.Group == "" || len(o.Group) > maxNameLen:
		return fmt.Errorf("%w: group %q must be 1 to %d bytes", ErrInvalidOffset, o.Group, maxNameLen)
	case o.Topic == "" || len(o.Topic) > maxNameLen:
		return fmt.Errorf("%w: topic %q must be 1 to %d bytes", ErrInvalidOffset, o.Topic, maxNameLen)
	case strings.ContainsRune(o.Group, '/') || strings.ContainsRune(o.Topic, '/'):
		// A slash would change the ZooKeeper path; refused everywhere alike.
		return fmt.Errorf("%w: group %q / topic %q must not contain '/'", ErrInvalidOffset, o.Group, o.Topic)
	case o.Partition < 0 || o.Partition > 1<<31-1:
		return fmt.Errorf("%w: partition %d", ErrInvalidOffset, o.Partition)
	case o.Next < 0:
		return fmt.Errorf("%w: offset %d of %s/%s/%d is negative", ErrInvalidOffset, o.Next, o.Group, o.Topic, o.Partition)
	case len(o.CommittedBy) > maxNameLen:
		return fmt.Errorf("%w: committed_by longer than %d bytes", ErrInvalidOffset, maxNameLen)
	}
	return nil
}

// Coalesce validates offsets and returns one per key, the highest, sorted by
// key (group, topic, partition, byte order). Every store writes its batch in
// this order, so that concurrent writers lock rows in the same order. For
// equal offsets the later one in the input wins (its CommittedBy is kept).
func Coalesce(offsets []Offset) ([]Offset, error) {
	for _, o := range offsets {
		if err := validate(o); err != nil {
			return nil, err
		}
	}
	return coalesceValid(offsets), nil
}

// Config selects and configures a store for Open.
type Config struct {
	// Store is "file" (default), "postgres", "mysql" (also "mariadb") or "zookeeper".
	Store string
	// DSN of the database for postgres (URL or key=value) and mysql
	// (go-sql-driver format, e.g. "root@tcp(127.0.0.1:3306)/test").
	DSN string
	// Dir is the data directory of the file store (created if missing).
	Dir string
	// ZooKeeper lists host:port servers for the zookeeper store.
	ZooKeeper []string
	// Root is the ZooKeeper chroot of Imago's znodes. Default "/imago".
	Root string
	// Migrate applies package migrations to the database at Open (postgres, mysql).
	Migrate bool
	// MaxConns bounds the connection pool of postgres and mysql. Default 8.
	MaxConns int
	// GroupCommit configures the Batcher Open puts in front of the store.
	GroupCommit GroupCommitConfig
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger

	// zkSessionTimeout replaces the ZooKeeper session timeout asked for (tests).
	zkSessionTimeout time.Duration
}

// Store kinds accepted by Config.Store.
const (
	KindFile      = "file"
	KindPostgres  = "postgres"
	KindMySQL     = "mysql"
	KindZooKeeper = "zookeeper"
)

func (c Config) kind() string {
	if d, ok := migrations.Dialect(c.Store); ok {
		return d // KindPostgres or KindMySQL
	}
	switch k := strings.ToLower(c.Store); k {
	case "", KindFile:
		return KindFile
	case "zk":
		return KindZooKeeper
	default:
		return k
	}
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c Config) maxConns() int {
	if c.MaxConns > 0 {
		return c.MaxConns
	}
	return 8
}

// Open opens the configured store and puts a Batcher (group commit) in front
// of it. Close the result to flush waiting commits and release the store.
func Open(ctx context.Context, cfg Config) (*Batcher, error) {
	s, err := OpenDirect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return NewBatcher(s, cfg.GroupCommit, cfg.logger()), nil
}

// OpenDirect opens the configured store without group commit: each Commit is
// its own transaction (one multi-row upsert for the offsets of that call).
// Most callers want Open.
func OpenDirect(ctx context.Context, cfg Config) (Store, error) {
	switch cfg.kind() {
	case KindFile:
		return OpenFile(cfg.Dir, cfg.logger())
	case KindPostgres:
		return OpenPostgres(ctx, cfg)
	case KindMySQL:
		return OpenMySQL(ctx, cfg)
	case KindZooKeeper:
		return OpenZooKeeper(ctx, cfg)
	default:
		return nil, fmt.Errorf("offsetdb: unknown store %q (want file, postgres, mysql or zookeeper)", cfg.Store)
	}
}
