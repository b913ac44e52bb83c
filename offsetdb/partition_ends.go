package offsetdb

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PartitionEnd is the readable end of a topic partition: the offset the next
// produced message will get.
type PartitionEnd struct {
	Topic     string
	Partition int
	End       int64
}

const pgEndsUpsert = `
INSERT INTO imago.partition_ends AS e (topic, partition, end_offset, updated_at)
SELECT u.t, u.p, u.n, now()
  FROM unnest($1::text[], $2::int[], $3::bigint[]) WITH ORDINALITY AS u(t, p, n, i)
 ORDER BY u.i
ON CONFLICT (topic, partition) DO UPDATE
   SET end_offset = GREATEST(e.end_offset, EXCLUDED.end_offset), updated_at = EXCLUDED.updated_at`

// PartitionEnds keeps imago.partition_ends (imago_partition_ends) current,
// for the consumer_lag view. The broker calls Record on every durable append
// (cheap: it only remembers the greatest end per partition); a goroutine,
// stopped by Close, writes what changed once per interval in one upsert that
// keeps the greater value. With the file or ZooKeeper store there is no
// table and PartitionEnds discards everything.
type PartitionEnds struct {
	log      *slog.Logger
	pool     *pgxpool.Pool // postgres
	db       *sql.DB       // mysql
	interval time.Duration

	mu      sync.Mutex
	pending map[Key]int64 // Group unused

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// OpenPartitionEnds connects to cfg's database (postgres or mysql; anything
// else gives a PartitionEnds that discards) and starts writing every interval
// (default 1s).
func OpenPartitionEnds(ctx context.Context, cfg Config, interval time.Duration) (*PartitionEnds, error) {
	if interval <= 0 {
		interval = time.Second
	}
	p := &PartitionEnds{log: cfg.logger(), interval: interval, pending: make(map[Key]int64),
		stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	switch cfg.kind() {
	case KindPostgres:
		p.pool, err = newPgPool(ctx, cfg)
	case KindMySQL:
		p.db, err = newMySQLDB(ctx, cfg)
	default:
		close(p.done)
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	go p.run()
	return p, nil
}

// Record notes a partition's end, to be written at the next interval.
func (p *PartitionEnds) Record(topic string, partition int, end int64) {
	if p.pool == nil && p.db == nil {
		return
	}
	k := Key{Topic: topic, Partition: partition}
	p.mu.Lock()
	if cur, ok := p.pending[k]; !ok || end > cur {
		p.pending[k] = end
	}
	p.mu.Unlock()
}

// Update writes ends now, in one statement; the stored end becomes the
// greater one.
func (p *PartitionEnds) Update(ctx context.Context, ends []PartitionEnd) error {
	if len(ends) == 0 || (p.pool == nil && p.db == nil) {
		return nil
	}
	ends = coalesceEnds(ends)
	if p.pool != nil {
		t := make([]string, len(ends))
		pa := make([]int32, len(ends))
		n := make([]int64, len(ends))
		for i, e := range ends {
			t[i], pa[i], n[i] = e.Topic, int32(e.Partition), e.End
		}
		return retryConflict(ctx, func() error {
			_, err := p.pool.Exec(ctx, pgEndsUpsert, t, pa, n)
			return err
		}, isPgConflict)
	}
	var q strings.Builder
	q.WriteString("INSERT INTO imago_partition_ends (topic, `partition`, end_offset, updated_at) VALUES ")
	args := make([]any, 0, 3*len(ends))
	for i, e := range ends {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?,?,?,UTC_TIMESTAMP(6))")
		args = append(args, e.Topic, e.Partition, e.End)
	}
	q.WriteString(" ON DUPLICATE KEY UPDATE end_offset = GREATEST(end_offset, VALUES(end_offset)), updated_at = VALUES(updated_at)")
	return retryConflict(ctx, func() error {
		_, err := p.db.ExecContext(ctx, q.String(), args...)
		return err
	}, isMySQLConflict)
}

func coalesceEnds(ends []PartitionEnd) []PartitionEnd {
	out := slices.Clone(ends)
	slices.SortFunc(out, func(a, b PartitionEnd) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(b.End, a.End))
	})
	return slices.CompactFunc(out, func(a, b PartitionEnd) bool { return a.Topic == b.Topic && a.Partition == b.Partition })
}

func (p *PartitionEnds) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.flush()
		case <-p.stop:
			p.flush()
			return
		}
	}
}

// flush writes the pending ends; on failure they are kept for the next try.
func (p *PartitionEnds) flush() {
	p.mu.Lock()
	batch := p.pending
	p.pending = make(map[Key]int64)
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ends := make([]PartitionEnd, 0, len(batch))
	for k, e := range batch {
		ends = append(ends, PartitionEnd{Topic: k.Topic, Partition: k.Partition, End: e})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := p.Update(ctx, ends)
	cancel()
	if err != nil {
		p.log.Warn("partition ends: write failed, will retry", "partitions", len(ends), "err", fmt.Errorf("offsetdb: %w", err))
		for _, e := range ends {
			p.Record(e.Topic, e.Partition, e.End)
		}
	}
}

// Close writes what is pending and closes the connection.
func (p *PartitionEnds) Close() error {
	p.once.Do(func() {
		if p.pool == nil && p.db == nil {
			return
		}
		close(p.stop)
		<-p.done
		if p.pool != nil {
			p.pool.Close()
		}
		if p.db != nil {
			p.db.Close()
		}
	})
	return nil
}
