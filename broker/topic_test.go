package broker

import (
	"errors"
	"testing"
	"time"
)

// TestCreateTopicExisting: creating a topic that exists is a no-op (created false, nil error)
// when the request states the stored configuration, and ErrTopicExists when it differs in
// partitions, retention age or retention bytes, on a single node and through the replicated
// path alike. A retention of 0 is the broker default and is stored as 0, so leaving it out
// repeats it.
func TestCreateTopicExisting(t *testing.T) {
	for _, replicated := range []bool{false, true} {
		name := "single"
		if replicated {
			name = "replicated"
		}
		t.Run(name, func(t *testing.T) {
			o := manualOptions(t, t.TempDir())
			o.Replicated = replicated
			b := mustOpen(t, o)
			defer b.Close()
			if replicated {
				b.SetProposer(&loopProposer{b: b, term: 1})
			}
			if created, err := b.CreateTopic("kept", TopicConfig{Partitions: 2, RetentionAge: time.Hour, RetentionBytes: 1 << 20}); !created || err != nil {
				t.Fatalf("create kept: %v %v", created, err)
			}
			if created, err := b.CreateTopic("plain", TopicConfig{Partitions: 2}); !created || err != nil {
				t.Fatalf("create plain: %v %v", created, err)
			}
			cases := []struct {
				topic string
				cfg   TopicConfig
				same  bool
			}{
				{"kept", TopicConfig{Partitions: 2, RetentionAge: time.Hour, RetentionBytes: 1 << 20}, true},
				{"kept", TopicConfig{Partitions: 2, RetentionAge: time.Hour + 300*time.Microsecond, RetentionBytes: 1 << 20}, true}, // stored in ms
				{"kept", TopicConfig{Partitions: 3, RetentionAge: time.Hour, RetentionBytes: 1 << 20}, false},
				{"kept", TopicConfig{Partitions: 2, RetentionAge: 2 * time.Hour, RetentionBytes: 1 << 20}, false},
				{"kept", TopicConfig{Partitions: 2, RetentionAge: time.Hour, RetentionBytes: 2 << 20}, false},
				{"kept", TopicConfig{Partitions: 2, RetentionBytes: 1 << 20}, false}, // the default is not an hour
				{"kept", TopicConfig{Partitions: 2}, false},
				{"plain", TopicConfig{Partitions: 2}, true},
				{"plain", TopicConfig{Partitions: 2, RetentionAge: time.Hour}, false},
				{"plain", TopicConfig{Partitions: 2, RetentionBytes: 1}, false},
				{"plain", TopicConfig{Partitions: 2, RetentionAge: o.RetentionAge}, false}, // 0 follows the default; a stated age does not
			}
			for _, c := range cases {
				created, err := b.CreateTopic(c.topic, c.cfg)
				switch {
				case created:
					t.Errorf("%s %+v: created again", c.topic, c.cfg)
				case c.same && err != nil:
					t.Errorf("%s %+v: %v, want the same configuration", c.topic, c.cfg, err)
				case !c.same && !errors.Is(err, ErrTopicExists):
					t.Errorf("%s %+v: %v, want ErrTopicExists", c.topic, c.cfg, err)
				}
			}
		})
	}
}
