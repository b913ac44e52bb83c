package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

// This file holds the Topics endpoints: PUT, GET one, GET all.

// maxPartitions is the broker's limit on partitions per topic.
const maxPartitions = 10000

// nameParam returns the path parameter param ({topic}, {group}, {member}) after checking it
// is a valid name. "." and ".." are reserved: as a path segment a browser or an HTTP client
// resolves them away (the console could never address a group so named), so no topic, group
// or member takes them.
func nameParam(r *http.Request, param string) (string, error) {
	v := chi.URLParam(r, param)
	if !broker.ValidName(v) {
		return "", invalidNameError(param, v)
	}
	if broker.ReservedName(v) {
		return "", newError(http.StatusBadRequest, api.CodeInvalidName,
			"%s name %q is reserved: a URL path segment of dots is resolved away by clients; choose another name", param, v)
	}
	return v, nil
}

// topicRequest is the PUT /v1/topics/{topic} body; pointers tell absent from zero.
type topicRequest struct {
	Partitions     *int   `json:"partitions"`
	RetentionMS    *int64 `json:"retention_ms"`
	RetentionBytes *int64 `json:"retention_bytes"`
}

// decodeStrict decodes one JSON object into v, rejecting unknown fields and trailing data,
// and maps encoding/json's errors to invalid_json or invalid_field.
func decodeStrict(body []byte, v any, example string) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is empty; send %s", example)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			return newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body holds data after the JSON object; send only %s", example)
		}
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if !json.Valid(body) {
			return jsonSyntaxError(body)
		}
		field := te.Field
		if field == "" {
			field = "body"
		}
		return fieldError(field, "must be %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
		return jsonSyntaxError(body)
	}
	// DisallowUnknownFields: `json: unknown field "x"`
	if !json.Valid(body) {
		return jsonSyntaxError(body)
	}
	return newError(http.StatusBadRequest, api.CodeInvalidField, "%s; send %s", err.Error()[len("json: "):], example)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "int32", "uint", "uint64":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	}
	return "of another type"
}

func (s *Server) handleCreateTopic(w http.ResponseWriter, r *http.Request) error {
	topic, err := nameParam(r, "topic")
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	const example = `{"partitions": 4}`
	var req topicRequest
	if err := decodeStrict(*bp, &req, example); err != nil {
		return err
	}
	switch {
	case req.Partitions == nil:
		return fieldError("partitions", "is required: send %s", example)
	case *req.Partitions < 1 || *req.Partitions > maxPartitions:
		return fieldError("partitions", "must be between 1 and %d, not %d", maxPartitions, *req.Partitions)
	case req.RetentionMS != nil && *req.RetentionMS < 0:
		return fieldError("retention_ms", "must be 0 (the broker default) or positive")
	case req.RetentionBytes != nil && *req.RetentionBytes < 0:
		return fieldError("retention_bytes", "must be 0 (the broker default) or positive")
	}
	cfg := broker.TopicConfig{Partitions: *req.Partitions}
	if req.RetentionMS != nil {
		if *req.RetentionMS > int64(1<<63-1)/int64(time.Millisecond) {
			return fieldError("retention_ms", "is too large")
		}
		cfg.RetentionAge = time.Duration(*req.RetentionMS) * time.Millisecond
	}
	if req.RetentionBytes != nil {
		cfg.RetentionBytes = *req.RetentionBytes
	}
	created, err := s.b.CreateTopic(topic, cfg)
	if err != nil {
		return err
	}
	info, err := s.b.Topic(topic)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, topicJSON(info))
}

func topicJSON(info broker.TopicInfo) api.Topic {
	t := api.Topic{
		Name:           info.Name,
		Partitions:     make([]api.PartitionInfo, 0, len(info.Partitions)),
		RetentionMS:    info.Config.RetentionAge.Milliseconds(),
		RetentionBytes: info.Config.RetentionBytes,
	}
	for _, p := range info.Partitions {
		t.Partitions = append(t.Partitions, api.PartitionInfo{
			Partition: p.Partition, StartOffset: p.StartOffset, EndOffset: p.EndOffset, Bytes: p.Bytes,
		})
	}
	return t
}

func (s *Server) handleDescribeTopic(w http.ResponseWriter, r *http.Request) error {
	topic, err := nameParam(r, "topic")
	if err != nil {
		return err
	}
	info, err := s.b.Topic(topic)
	if errors.Is(err, broker.ErrUnknownTopic) {
		return unknownTopicError(topic)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, topicJSON(info))
}

func (s *Server) handleListTopics(w http.ResponseWriter, r *http.Request) error {
	infos := s.b.Topics()
	out := api.TopicList{Topics: make([]api.TopicSummary, 0, len(infos))}
	for _, t := range infos {
		n := t.Config.Partitions
		if n == 0 {
			n = len(t.Partitions)
		}
		out.Topics = append(out.Topics, api.TopicSummary{Name: t.Name, Partitions: n})
	}
	return writeJSON(w, http.StatusOK, out)
}
