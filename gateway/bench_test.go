package gateway

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

func fetchResult(n, size int, jsonValues bool) *broker.FetchResult {
	res := &broker.FetchResult{NextOffset: int64(n), EndOffset: int64(n)}
	ts := time.Date(2026, 11, 24, 9, 30, 0, 123e6, time.UTC)
	for i := 0; i < n; i++ {
		m := broker.FetchedMessage{Offset: int64(i), Timestamp: ts, Key: []byte(fmt.Sprintf("acct-%d", i)),
			Headers: []broker.Header{{Key: "trace-id", Value: "4bf92f3577b34da6a3ce929d0e0e4736"}}}
		if jsonValues {
			m.Value = []byte(`{"payload":"` + strings.Repeat("x", size-14) + `"}`)
			m.ValueJSON = true
		} else {
			m.Value = bytes.Repeat([]byte{0xab}, size)
		}
		res.Messages = append(res.Messages, m)
	}
	return res
}

// BenchmarkEncodeFetch measures the fetch response encoder on 100 messages of 1 KiB;
// MB/s counts the value bytes.
func BenchmarkEncodeFetch(b *testing.B) {
	for _, kind := range []struct {
		name string
		json bool
	}{{"json", true}, {"base64", false}} {
		b.Run(kind.name, func(b *testing.B) {
			res := fetchResult(100, 1024, kind.json)
			b.SetBytes(100 * 1024)
			b.ReportAllocs()
			for b.Loop() {
				buf := getBuf()
				*buf = appendFetchResponse(*buf, "settlement.transfers", 3, res)
				putBuf(buf)
			}
		})
	}
}

// BenchmarkDecodeProduceRequest measures the produce decoder on one 1 KiB message.
func BenchmarkDecodeProduceRequest(b *testing.B) {
	for _, kind := range []struct{ name, body string }{
		{"json", `{"messages":[{"key":"acct-42","value":{"payload":"` + strings.Repeat("x", 1010) + `"},"headers":{"trace-id":"abc"}}]}`},
		{"base64", `{"messages":[{"key":"acct-42","value_base64":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 1024)) + `"}]}`},
	} {
		b.Run(kind.name, func(b *testing.B) {
			body := []byte(kind.body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeProduceRequest(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProduceHTTP produces one 1 KiB message per request over real HTTP against a real
// broker (fsync always) from parallel clients: the produce path of acceptance 7, in-process.
func BenchmarkProduceHTTP(b *testing.B) {
	ts := startServerB(b)
	body := []byte(`{"messages":[{"value":{"payload":"` + strings.Repeat("x", 1010) + `"}}]}`)
	url := ts.hs.URL + "/v1/topics/bench/messages"
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	client := &http.Client{Transport: tr}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	tr.CloseIdleConnections()
}

// BenchmarkFetchHTTP fetches 1 MiB batches of 1 KiB messages over real HTTP from a real
// broker (page cache); MB/s counts response bytes.
func BenchmarkFetchHTTP(b *testing.B) {
	ts := startServerB(b)
	var msgs strings.Builder
	msgs.WriteString(`{"messages":[`)
	for i := 0; i < 100; i++ {
		if i > 0 {
			msgs.WriteString(",")
		}
		msgs.WriteString(`{"value":{"payload":"` + strings.Repeat("x", 1010) + `"}}`)
	}
	msgs.WriteString(`]}`)
	for i := 0; i < 50; i++ {
		ts.produce("bench", msgs.String())
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var total int64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := (i * 1000) % 5000
		resp, err := client.Get(fmt.Sprintf("%s/v1/topics/bench/partitions/0/messages?offset=%d&max_messages=1000&max_bytes=1048576", ts.hs.URL, off))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		total += n
	}
	b.ReportMetric(float64(total)/1e6/b.Elapsed().Seconds(), "MB/s")
}

func startServerB(b *testing.B) *testServer {
	b.Helper()
	ts := startServer(b, Options{})
	ts.createTopic("bench", 1)
	return ts
}
