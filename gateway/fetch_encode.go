package gateway

import (
	"encoding/base64"
	"slices"
	"strconv"

	"github.com/imagomq/imago/broker"
)

// appendFetchResponse appends the JSON of a fetch answer:
//
//	{"messages":[{"topic","partition","offset","key","value"|"value_base64","headers","timestamp"}],
//	 "next_offset","start_offset","end_offset"}
//
// It writes by hand into dst (no reflection): JSON values are copied verbatim, other values
// base64-encoded, keys and headers escaped by appendJSONString. A message without a key has
// "key":null; one without headers has "headers":{}.
func appendFetchResponse(dst []byte, topic string, partition int, res *broker.FetchResult) []byte {
	dst = slices.Grow(dst, fetchResponseSize(topic, res))
	// The per-message prefix {"topic":"t","partition":P,"offset": is the same for all.
	var stackPrefix [320]byte
	pfx := appendMessagePrefix(stackPrefix[:0], topic, partition)

	dst = append(dst, `{"messages":[`...)
	for i := range res.Messages {
		m := &res.Messages[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, pfx...)
		dst = appendMessageRest(dst, m)
	}
	dst = append(dst, `],"next_offset":`...)
	dst = strconv.AppendInt(dst, res.NextOffset, 10)
	dst = append(dst, `,"start_offset":`...)
	dst = strconv.AppendInt(dst, res.StartOffset, 10)
	dst = append(dst, `,"end_offset":`...)
	dst = strconv.AppendInt(dst, res.EndOffset, 10)
	return append(dst, "}\n"...)
}

// fetchResponseSize estimates the response size so the buffer grows once.
func fetchResponseSize(topic string, res *broker.FetchResult) int {
	n := 96
	per := len(topic) + 140
	for i := range res.Messages {
		m := &res.Messages[i]
		n += per + len(m.Key) + len(m.Key)/8
		if m.ValueJSON {
			n += len(m.Value)
		} else {
			n += base64.StdEncoding.EncodedLen(len(m.Value))
		}
		for _, h := range m.Headers {
			n += len(h.Key) + len(h.Value) + 6
		}
	}
	return n
}

// appendMessage writes one message as the fetch answers do.
func appendMessage(dst []byte, topic string, partition int, m *broker.FetchedMessage) []byte {
	return appendMessageRest(appendMessagePrefix(dst, topic, partition), m)
}

// appendMessagePrefix writes {"topic":"t","partition":P,"offset": (the same for every message
// of a partition).
func appendMessagePrefix(dst []byte, topic string, partition int) []byte {
	dst = append(dst, `{"topic":`...)
	dst = appendJSONString(dst, topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(partition), 10)
	return append(dst, `,"offset":`...)
}

// appendMessageRest writes the rest of a message after its prefix: the offset's value, key,
// value or value_base64, headers and timestamp, and the closing brace.
func appendMessageRest(dst []byte, m *broker.FetchedMessage) []byte {
	dst = strconv.AppendInt(dst, m.Offset, 10)
	if m.Key == nil {
		dst = append(dst, `,"key":null`...)
	} else {
		dst = append(dst, `,"key":`...)
		dst = appendJSONString(dst, m.Key)
	}
	if m.ValueJSON {
		dst = append(dst, `,"value":`...)
		dst = append(dst, m.Value...)
	} else {
		dst = append(dst, `,"value_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Value)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"headers":{`...)
	for j, h := range m.Headers {
		if j > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, h.Key)
		dst = append(dst, ':')
		dst = appendJSONString(dst, h.Value)
	}
	dst = append(dst, `},"timestamp":`...)
	dst = appendTimestamp(dst, m.Timestamp)
	return append(dst, '}')
}
