package broker

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

const maxPartitions = 10000

// topic is a named set of partitions. Its id, not its name, is stored in records.
type topic struct {
	id    uint32
	name  string
	cfg   TopicConfig
	parts []*partition
	rr    atomic.Uint32 // round-robin cursor for unkeyed messages
}

// topicMeta is one topic as stored in topics.json.
type topicMeta struct {
	ID             uint32 `json:"id"`
	Name           string `json:"name"`
	Partitions     int    `json:"partitions"`
	RetentionMs    int64  `json:"retention_ms,omitempty"`
	RetentionBytes int64  `json:"retention_bytes,omitempty"`
	CreatedAt      string `json:"created_at"`
}

type topicsFile struct {
	Version int         `json:"version"`
	Topics  []topicMeta `json:"topics"`
}

const topicsFileName = "topics.json"

func loadTopics(dir string) ([]topicMeta, error) {
	b, err := fsutil.ReadFileDurable(filepath.Join(dir, topicsFileName))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", topicsFileName, err)
	}
	var tf topicsFile
	if err := json.Unmarshal(b, &tf); err != nil {
		return nil, fmt.Errorf("parse %s: %w", topicsFileName, err)
	}
	return tf.Topics, nil
}

// saveTopics writes topics.json atomically and durably (temp file, fsync, rename, fsync dir).
func saveTopics(dir string, metas []topicMeta) error {
	sort.Slice(metas, func(i, j int) bool { return metas[i].ID < metas[j].ID })
	b, err := json.MarshalIndent(topicsFile{Version: 1, Topics: metas}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(dir, topicsFileName, b, 0o644)
}

func (m topicMeta) config() TopicConfig {
	return TopicConfig{
		Partitions:     m.Partitions,
		RetentionAge:   time.Duration(m.RetentionMs) * time.Millisecond,
		RetentionBytes: m.RetentionBytes,
	}
}

// newTopic builds the in-memory topic; partitions start empty (recovery fills them).
func (b *Broker) newTopic(m topicMeta) *topic {
	t := &topic{id: m.ID, name: m.Name, cfg: m.config()}
	for i := 0; i < m.Partitions; i++ {
		t.parts = append(t.parts, &partition{
			t:       t,
			id:      i,
			dir:     filepath.Join(b.opts.Dir, "index", m.Name+"-"+strconv.Itoa(i)),
			entries: int64(b.opts.IndexSegmentEntries),
		})
	}
	return t
}

// retention returns the effective retention of t.
func (b *Broker) retention(t *topic) (time.Duration, int64) {
	age, size := t.cfg.RetentionAge, t.cfg.RetentionBytes
	if age == 0 {
		age = b.opts.RetentionAge
	}
	if size == 0 {
		size = b.opts.RetentionBytes
	}
	return age, size
}

// CreateTopic creates a topic. It reports created=false with a nil error when the topic exists
// with the same configuration (see sameTopicConfig), and ErrTopicExists when it exists with
// another.
// ErrInvalidName and ErrInvalidArgument (partitions outside 1..10000) are returned for bad input.
func (b *Broker) CreateTopic(name string, cfg TopicConfig) (bool, error) {
	if !ValidName(name) {
		return false, fmt.Errorf("%w: topic %q must match ^[A-Za-z0-9._-]{1,249}$", ErrInvalidName, name)
	}
	if ReservedName(name) {
		return false, fmt.Errorf("%w: topic %q is reserved", ErrInvalidName, name)
	}
	if cfg.Partitions < 1 || cfg.Partitions > maxPartitions {
		return false, fmt.Errorf("%w: partitions must be between 1 and %d, got %d", ErrInvalidArgument, maxPartitions, cfg.Partitions)
	}
	if cfg.RetentionAge < 0 || cfg.RetentionBytes < 0 {
		return false, fmt.Errorf("%w: retention must not be negative", ErrInvalidArgument)
	}
	if b.opts.Replicated {
		return b.createTopicReplicated(name, cfg)
	}
	b.topicMu.Lock()
	defer b.topicMu.Unlock()
	if b.closed.Load() {
		return false, ErrClosed
	}
	if t, ok := b.topicsByName()[name]; ok {
		return false, t.existsAs(cfg)
	}
	metas := make([]topicMeta, 0, len(b.metas)+1)
	metas = append(metas, b.metas...)
	m := topicMeta{
		ID:             b.nextTopicID,
		Name:           name,
		Partitions:     cfg.Partitions,
		RetentionMs:    cfg.RetentionAge.Milliseconds(),
		RetentionBytes: cfg.RetentionBytes,
		CreatedAt:      b.opts.Now().UTC().Format(time.RFC3339),
	}
	metas = append(metas, m)
	if err := saveTopics(b.opts.Dir, metas); err != nil {
		return false, fmt.Errorf("create topic %q: %w", name, err)
	}
	b.metas = metas
	b.nextTopicID++
	t := b.newTopic(m)
	b.addTopic(t)
	b.opts.Logger.Info("topic created", "topic", name, "partitions", cfg.Partitions)
	return true, nil
}

// sameTopicConfig reports whether a request for want matches the stored have. Retention is
// compared as it is stored, in whole milliseconds, and 0 (the broker default) is stored as 0:
// a repeat of the creating request, or one that states a retention of 0 it had left out,
// matches; a retention other than the stored one, including the broker default's value spelt
// out for a topic stored with 0, does not.
func sameTopicConfig(have, want TopicConfig) bool {
	return have.Partitions == want.Partitions &&
		have.RetentionAge.Milliseconds() == want.RetentionAge.Milliseconds() &&
		have.RetentionBytes == want.RetentionBytes
}

// existsAs is CreateTopic's answer for a request for cfg that finds t: nil when t has that
// configuration, else ErrTopicExists naming t's configuration.
func (t *topic) existsAs(cfg TopicConfig) error {
	if sameTopicConfig(t.cfg, cfg) {
		return nil
	}
	return fmt.Errorf("%w: %q has %d partitions, retention_ms %d and retention_bytes %d (0: the broker default)",
		ErrTopicExists, t.name, t.cfg.Partitions, t.cfg.RetentionAge.Milliseconds(), t.cfg.RetentionBytes)
}

// topicTable is an immutable snapshot of the topics, swapped on change.
type topicTable struct {
	byName map[string]*topic
	byID   map[uint32]*topic
}

func (b *Broker) topicsByName() map[string]*topic { return b.table.Load().byName }

// addTopic publishes t in a new table. The caller holds topicMu.
func (b *Broker) addTopic(t *topic) {
	old := b.table.Load()
	nt := &topicTable{byName: make(map[string]*topic, len(old.byName)+1), byID: make(map[uint32]*topic, len(old.byID)+1)}
	for k, v := range old.byName {
		nt.byName[k] = v
	}
	for k, v := range old.byID {
		nt.byID[k] = v
	}
	nt.byName[t.name] = t
	nt.byID[t.id] = t
	b.table.Store(nt)
}

func (b *Broker) lookup(name string) (*topic, error) {
	t, ok := b.topicsByName()[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	return t, nil
}

func (t *topic) partition(p int) (*partition, error) {
	if p < 0 || p >= len(t.parts) {
		return nil, fmt.Errorf("%w: topic %q has partitions 0..%d, not %d", ErrUnknownPartition, t.name, len(t.parts)-1, p)
	}
	return t.parts[p], nil
}

func (t *topic) info() TopicInfo {
	ti := TopicInfo{Name: t.name, Config: t.cfg, Partitions: make([]PartitionInfo, len(t.parts))}
	for i, p := range t.parts {
		ti.Partitions[i] = p.info()
	}
	return ti
}

// Topics lists every topic, sorted by name, with its partitions.
func (b *Broker) Topics() []TopicInfo {
	m := b.topicsByName()
	out := make([]TopicInfo, 0, len(m))
	for _, t := range m {
		out = append(out, t.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Topic describes one topic; ErrUnknownTopic if there is none.
func (b *Broker) Topic(name string) (TopicInfo, error) {
	t, err := b.lookup(name)
	if err != nil {
		return TopicInfo{}, err
	}
	return t.info(), nil
}
