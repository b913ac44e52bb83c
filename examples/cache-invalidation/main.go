// Command cache-invalidation is the broadcast example: several service instances each keep
// prices in an in-memory cache; when a price changes, one invalidation message is published,
// and every instance (a broadcast consumer: each member gets every message) evicts the key
// from its own cache. The instances run here as goroutines of one process, each with its own
// consumer id, so each keeps its own offsets.
//
//	go run ./examples/cache-invalidation [-server http://127.0.0.1:8080] [-caches 3]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imagomq/imago/client"
)

// Topic carries the invalidations.
const Topic = "cache.invalidations"

// invalidation is one message: the keys whose cached values are stale.
type invalidation struct {
	Keys []string `json:"keys"`
	Why  string   `json:"why"`
}

// cache is one instance's in-memory cache.
type cache struct {
	name string
	mu   sync.Mutex
	m    map[string]int64
}

func (c *cache) evict(key string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	delete(c.m, key)
	return v, ok
}

func (c *cache) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ks []string
	for k := range c.m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "Imago HTTP address")
	n := flag.Int("caches", 3, "service instances, each with its own cache")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := run(*server, *n); err != nil {
		fmt.Fprintln(os.Stderr, "cache-invalidation:", err)
		os.Exit(1)
	}
}

func run(server string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := client.New(server)
	if _, err := c.CreateTopic(ctx, Topic, client.TopicConfig{Partitions: 1}); err != nil {
		return fmt.Errorf("create topic %s: %w", Topic, err)
	}
	stale := []string{"price:sku-2", "price:sku-4"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	missing := map[string]int{} // instance -> stale keys still cached
	consumers := make([]*client.Consumer, n)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	evicted := make(chan struct{})
	for i := range n {
		ch := &cache{name: fmt.Sprintf("cache-%c", 'a'+i), m: map[string]int64{
			"price:sku-1": 1999, "price:sku-2": 2450, "price:sku-3": 999, "price:sku-4": 12900}}
		missing[ch.name] = len(stale)
		// Broadcast: every instance gets every message. Each keeps its offsets under its own
		// consumer id; a new one starts at the earliest stored message.
		cs := client.NewConsumer(c, "price-cache", []string{Topic}, client.ConsumerMode(client.Broadcast),
			client.ConsumerID(ch.name), client.ConsumerStartFrom("earliest"), client.ConsumerPollWait(time.Second))
		consumers[i] = cs
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cs.Run(runCtx, func(ctx context.Context, m client.FetchedMessage) error {
				var inv invalidation
				if err := json.Unmarshal(m.Value, &inv); err != nil {
					return fmt.Errorf("offset %d: %w", m.Offset, err)
				}
				for _, k := range inv.Keys {
					if v, ok := ch.evict(k); ok {
						fmt.Printf("%s: evicted %s (cached %d) because %s (offset %d); still cached: %s\n", ch.name, k, v, inv.Why, m.Offset, strings.Join(ch.keys(), " "))
						mu.Lock()
						if missing[ch.name]--; missing[ch.name] == 0 {
							left := 0
							for _, x := range missing {
								left += x
							}
							if left == 0 {
								close(evicted) // every instance evicted every stale key
							}
						}
						mu.Unlock()
					}
				}
				return nil
			})
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", ch.name, err)
				stop()
			}
		}()
	}
	// Publish once every instance has joined (then each one gets the message).
	for _, cs := range consumers {
		for cs.MemberID() == "" {
			select {
			case <-runCtx.Done():
				wg.Wait()
				return fmt.Errorf("instances did not join: %w", runCtx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	body, _ := json.Marshal(invalidation{Keys: stale, Why: "prices changed"})
	prod := c.NewProducer()
	pos, err := prod.SendSync(ctx, Topic, client.Message{Value: body})
	prod.Close(ctx)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	fmt.Printf("published one invalidation of %s at offset %d\n", strings.Join(stale, ", "), pos.Offset)
	select {
	case <-evicted:
	case <-runCtx.Done():
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("not every instance evicted the stale keys: %v", missing)
	}
	// Stop once every instance's offset is committed past the message, so that a next run
	// starts after it (the offsets are the group's, per consumer id).
	for !committedPast(runCtx, c, n, pos) {
		select {
		case <-runCtx.Done():
			wg.Wait()
			return fmt.Errorf("offsets not committed: %w", runCtx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	wg.Wait()
	fmt.Printf("all %d caches evicted %s\n", n, strings.Join(stale, ", "))
	return nil
}

// committedPast reports whether n consumers of the group have committed an offset past pos.
func committedPast(ctx context.Context, c *client.Client, n int, pos client.Position) bool {
	g, err := c.GroupOffsets(ctx, "price-cache")
	if err != nil {
		return false
	}
	past := 0
	for _, o := range g.Offsets {
		if o.Topic == Topic && o.Partition == pos.Partition && o.Offset > pos.Offset {
			past++
		}
	}
	return past >= n
}
