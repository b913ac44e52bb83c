// Package api holds Imago's HTTP contract: the OpenAPI 3.0 description of every route the
// gateway serves (openapi.yaml, embedded as Spec and served at /openapi.yaml) and the JSON
// request and response types shared by the gateway and the Go client. It imports nothing of
// Imago's own, so any program can depend on it.
//
// The gateway writes its hot responses (produce acknowledgements, fetched messages) by hand
// for speed; the types here describe the same JSON and are what the client decodes into.
package api

import (
	_ "embed" // for Spec
	"encoding/json"
)

// Spec is the OpenAPI 3.0 document (YAML) describing the HTTP API.
//
//go:embed openapi.yaml
var Spec []byte

// ErrorResponse is the body of every error: {"error": {"code", "message"}}.
// A 416 (offset_out_of_range) also carries StartOffset and EndOffset at the top level.
type ErrorResponse struct {
	Error       Error  `json:"error"`
	StartOffset *int64 `json:"start_offset,omitempty"`
	EndOffset   *int64 `json:"end_offset,omitempty"`
}

// Error describes what went wrong. Code is stable snake_case that programs branch on;
// Message is a sentence for a person; Field, when set, names the request field or
// parameter at fault (e.g. "messages[2].partition", "offset").
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// ProduceMessage is one message in a produce request. Exactly one of Value (any JSON,
// stored as its compact text and returned verbatim) and ValueBase64 (bytes, standard
// base64 with padding) is set. Key nil means no key; Partition nil lets the broker choose
// (FNV-1a of the key modulo the partition count, or round-robin for unkeyed messages).
type ProduceMessage struct {
	Key         *string           `json:"key,omitempty"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ValueBase64 *string           `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Partition   *int              `json:"partition,omitempty"`
}

// ProduceRequest is the body of POST /v1/topics/{topic}/messages.
type ProduceRequest struct {
	Messages []ProduceMessage `json:"messages"`
}

// Position is where a message was stored.
type Position struct {
	Partition int   `json:"partition"`
	Offset    int64 `json:"offset"`
}

// ProduceResponse answers a produce: one position per message, in request order.
// Duplicate is true when the Idempotency-Key had been seen and nothing was appended.
type ProduceResponse struct {
	Offsets   []Position `json:"offsets"`
	Duplicate bool       `json:"duplicate,omitempty"`
}

// Message is a fetched message. Exactly one of Value and ValueBase64 is set. Key is nil
// when the message has no key. Timestamp is RFC 3339 with milliseconds, UTC, set by the
// broker at append.
type Message struct {
	Topic       string            `json:"topic"`
	Partition   int               `json:"partition"`
	Offset      int64             `json:"offset"`
	Key         *string           `json:"key"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ValueBase64 *string           `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers"`
	Timestamp   string            `json:"timestamp"`
}

// FetchResponse answers GET /v1/topics/{topic}/partitions/{p}/messages. NextOffset is the
// offset to ask for next; EndOffset is one past the last durable message; StartOffset is
// the oldest offset still stored.
type FetchResponse struct {
	Messages    []Message `json:"messages"`
	NextOffset  int64     `json:"next_offset"`
	StartOffset int64     `json:"start_offset"`
	EndOffset   int64     `json:"end_offset"`
}

// TopicRequest is the body of PUT /v1/topics/{topic}. RetentionMS and RetentionBytes of 0
// (or absent) mean the broker defaults.
type TopicRequest struct {
	Partitions     int   `json:"partitions"`
	RetentionMS    int64 `json:"retention_ms,omitempty"`
	RetentionBytes int64 `json:"retention_bytes,omitempty"`
}

// TopicSummary is one entry of GET /v1/topics.
type TopicSummary struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
}

// TopicList answers GET /v1/topics.
type TopicList struct {
	Topics []TopicSummary `json:"topics"`
}

// PartitionInfo describes one partition of a topic.
type PartitionInfo struct {
	Partition   int   `json:"partition"`
	StartOffset int64 `json:"start_offset"`
	EndOffset   int64 `json:"end_offset"`
	Bytes       int64 `json:"bytes"`
}

// Topic answers GET and PUT /v1/topics/{topic}.
type Topic struct {
	Name           string          `json:"name"`
	Partitions     []PartitionInfo `json:"partitions"`
	RetentionMS    int64           `json:"retention_ms"`
	RetentionBytes int64           `json:"retention_bytes"`
}

// Stats answers GET /v1/stats: broker-wide counters.
type Stats struct {
	Version         string  `json:"version"`
	UptimeSeconds   float64 `json:"uptime_seconds"`
	Topics          int     `json:"topics"`
	Partitions      int     `json:"partitions"`
	MessagesIn      int64   `json:"messages_in"`
	BytesIn         int64   `json:"bytes_in"`
	MessagesOut     int64   `json:"messages_out"`
	BytesOut        int64   `json:"bytes_out"`
	Fsyncs          int64   `json:"fsyncs"`
	LogBytes        int64   `json:"log_bytes"`
	PendingBytes    int64   `json:"pending_bytes"`
	RecoveredBytes  int64   `json:"recovered_bytes"`
	TruncatedBytes  int64   `json:"truncated_bytes"`
	OpenDurationMS  float64 `json:"open_duration_ms"`
	IdempotencyKeys int     `json:"idempotency_keys"`
}

// Status answers /healthz and /readyz.
type Status struct {
	Status string `json:"status"`
}

// TxMessage is one message of a local transaction or an XA branch: a produce message that
// names its topic.
type TxMessage struct {
	Topic string `json:"topic"`
	ProduceMessage
}

// TopicPosition is where a committed transaction's message was stored.
type TopicPosition struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
}

// BeginTxRequest is the body of POST /v1/transactions. TimeoutMS 0 (or absent) means 30000;
// at most 3600000. A transaction past its timeout is rolled back.
type BeginTxRequest struct {
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// TxCreated answers POST /v1/transactions (201).
type TxCreated struct {
	ID        string `json:"id"`
	TimeoutMS int64  `json:"timeout_ms"`
}

// TxMessagesRequest is the body of POST /v1/transactions/{id}/messages.
type TxMessagesRequest struct {
	Messages []TxMessage `json:"messages"`
}

// TxMessagesResponse answers POST /v1/transactions/{id}/messages: the messages the
// transaction holds in all, this request's included.
type TxMessagesResponse struct {
	Messages int `json:"messages"`
}

// Transaction states of local transactions.
const (
	TxOpen       = "open"
	TxCommitted  = "committed"
	TxRolledBack = "rolled_back"
	TxTimedOut   = "timed_out"
)

// TxStatus answers GET /v1/transactions/{id}, and commit and rollback (without Messages and
// CreatedAt). Messages is the number held while open; Offsets are set once committed.
type TxStatus struct {
	ID        string          `json:"id"`
	State     string          `json:"state"`
	Messages  *int            `json:"messages,omitempty"`
	CreatedAt string          `json:"created_at,omitempty"`
	Offsets   []TopicPosition `json:"offsets,omitempty"`
}

// TxCommitResponse answers POST /v1/transactions/{id}/commit and POST /v1/xa/commit: one
// position per message, in the order the messages were added.
type TxCommitResponse struct {
	ID      string          `json:"id,omitempty"`
	State   string          `json:"state"`
	Offsets []TopicPosition `json:"offsets"`
}

// Xid identifies an XA branch. Gtrid and Bqual are hex, 1 to 64 bytes each; FormatID is a
// non-negative int32.
type Xid struct {
	FormatID int32  `json:"format_id"`
	Gtrid    string `json:"gtrid"`
	Bqual    string `json:"bqual"`
}

// XA flags of start and end.
const (
	XANoFlags = "noflags"
	XAJoin    = "join"
	XAResume  = "resume"
	XASuccess = "success"
	XAFail    = "fail"
	XASuspend = "suspend"
)

// XAStartRequest is the body of POST /v1/xa/start. Flags "" means noflags. TimeoutMS (0 or
// absent: 30000) applies to a new branch (noflags) until it is prepared.
type XAStartRequest struct {
	Xid       Xid    `json:"xid"`
	Flags     string `json:"flags,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// XAMessagesRequest is the body of POST /v1/xa/messages.
type XAMessagesRequest struct {
	Xid      Xid         `json:"xid"`
	Messages []TxMessage `json:"messages"`
}

// XAEndRequest is the body of POST /v1/xa/end.
type XAEndRequest struct {
	Xid   Xid    `json:"xid"`
	Flags string `json:"flags"`
}

// XAXidRequest is the body of POST /v1/xa/prepare, /v1/xa/rollback and /v1/xa/forget.
type XAXidRequest struct {
	Xid Xid `json:"xid"`
}

// XACommitRequest is the body of POST /v1/xa/commit.
type XACommitRequest struct {
	Xid      Xid  `json:"xid"`
	OnePhase bool `json:"one_phase"`
}

// XAHeuristicRequest is the body of POST /v1/xa/heuristic (admin): Decision is "commit" or
// "rollback".
type XAHeuristicRequest struct {
	Xid      Xid    `json:"xid"`
	Decision string `json:"decision"`
}

// XA branch states reported after a verb.
const (
	XAActive           = "active"
	XAIdle             = "idle"
	XASuspended        = "suspended"
	XARollbackOnly     = "rollback_only"
	XAPrepared         = "prepared"
	XACommitted        = "committed"
	XARolledBack       = "rolled_back"
	XAForgotten        = "forgotten"
	XAHeurCommitted    = "heuristically_committed"
	XAHeurRolledBack   = "heuristically_rolled_back"
	XAVoteOK           = "ok"
	XAVoteReadOnly     = "rdonly"
	XADecisionCommit   = "commit"
	XADecisionRollback = "rollback"
)

// XAState answers the XA verbs that have no other result: the branch's state after the verb.
type XAState struct {
	State string `json:"state"`
}

// XAPrepareResponse answers POST /v1/xa/prepare. Vote "rdonly" means the branch held no
// message and is already forgotten (State "forgotten"): it needs no commit or rollback.
type XAPrepareResponse struct {
	Vote  string `json:"vote"`
	State string `json:"state"`
}

// XARecoverResponse answers GET /v1/xa/recover: every prepared or heuristically completed
// branch, sorted.
type XARecoverResponse struct {
	Xids []Xid `json:"xids"`
}

// Consumer-group modes (POST /v1/groups/{group}/members "mode").
const (
	GroupClustered = "clustered"
	GroupBroadcast = "broadcast"
)

// Start positions of a broadcast member without a committed offset ("from").
const (
	FromEarliest = "earliest"
	FromLatest   = "latest"
)

// JoinGroupRequest is the body of POST /v1/groups/{group}/members. Mode "" means
// clustered. SessionTimeoutMS 0 (or absent) means 30000; 1000..300000. From applies to a
// partition the member has no committed offset for: broadcast members start at "latest" by
// default (or "earliest"); clustered groups always start at the earliest stored offset.
// ConsumerID (optional, a name) identifies the consumer across restarts: a join with the
// ConsumerID of a live member of the group replaces that member, and a broadcast member's
// offsets are kept under it (without it, under the member id).
type JoinGroupRequest struct {
	Topics           []string `json:"topics"`
	Mode             string   `json:"mode,omitempty"`
	SessionTimeoutMS int64    `json:"session_timeout_ms,omitempty"`
	From             string   `json:"from,omitempty"`
	ConsumerID       string   `json:"consumer_id,omitempty"`
}

// Assignment is one topic partition a member consumes.
type Assignment struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
}

// JoinGroupResponse answers POST /v1/groups/{group}/members (201). Generation counts the
// group's rebalances; Assignments are the member's partitions in that generation.
type JoinGroupResponse struct {
	MemberID         string       `json:"member_id"`
	SessionTimeoutMS int64        `json:"session_timeout_ms"`
	Mode             string       `json:"mode"`
	Generation       int64        `json:"generation"`
	Assignments      []Assignment `json:"assignments"`
}

// GroupMessages answers GET /v1/groups/{group}/members/{member}/messages: messages from the
// member's partitions, in offset order per partition, and the member's current assignment.
type GroupMessages struct {
	Messages    []Message    `json:"messages"`
	Generation  int64        `json:"generation"`
	Assignments []Assignment `json:"assignments"`
}

// GroupOffset is a committed position: Offset is the next offset to read.
type GroupOffset struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
}

// CommitOffsetsRequest is the body of POST /v1/groups/{group}/offsets.
type CommitOffsetsRequest struct {
	MemberID string        `json:"member_id"`
	Offsets  []GroupOffset `json:"offsets"`
}

// CommitOffsetsResponse answers POST /v1/groups/{group}/offsets (200, once durable): the
// offsets as committed.
type CommitOffsetsResponse struct {
	Offsets []GroupOffset `json:"offsets"`
}

// GroupOffsetStatus is one committed offset with the partition's end and the lag.
// UpdatedAt is when the offset was last written (RFC 3339, UTC). Consumer is set for a
// broadcast group's entries: the consumer (consumer_id or member id) whose offset it is.
type GroupOffsetStatus struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	EndOffset int64  `json:"end_offset"`
	Lag       int64  `json:"lag"`
	UpdatedAt string `json:"updated_at"`
	Consumer  string `json:"consumer,omitempty"`
}

// GroupMember describes a live member of a group.
type GroupMember struct {
	MemberID         string       `json:"member_id"`
	ConsumerID       string       `json:"consumer_id,omitempty"`
	Topics           []string     `json:"topics"`
	SessionTimeoutMS int64        `json:"session_timeout_ms"`
	LastSeen         string       `json:"last_seen"`
	Assignments      []Assignment `json:"assignments"`
	// Cursors are where the member's next poll reads, per assigned partition it has polled
	// since it gained it (its first poll there starts at the committed offset).
	Cursors []GroupOffset `json:"cursors"`
}

// GroupOffsets answers GET /v1/groups/{group}/offsets. Mode, Generation and Members describe
// the live membership in the answering broker process (empty when no member is live).
type GroupOffsets struct {
	Group      string              `json:"group"`
	Mode       string              `json:"mode,omitempty"`
	Generation int64               `json:"generation"`
	Members    []GroupMember       `json:"members"`
	Offsets    []GroupOffsetStatus `json:"offsets"`
}

// GroupSummary is one entry of GET /v1/groups.
type GroupSummary struct {
	Name    string `json:"name"`
	Mode    string `json:"mode,omitempty"`
	Members int    `json:"members"`
}

// GroupList answers GET /v1/groups: every group with committed offsets or live members,
// sorted by name.
type GroupList struct {
	Groups []GroupSummary `json:"groups"`
}

// GlobalTxStep is one step of a global transaction: a named operation, configured as
// operations.<resource>.<operation>, with its parameters (bound, never spliced into SQL).
type GlobalTxStep struct {
	Resource  string         `json:"resource"`
	Operation string         `json:"operation"`
	Params    map[string]any `json:"params,omitempty"`
}

// GlobalTxRequest is the body of POST /v1/global-transactions. ID (optional, 1 to 128
// characters of [A-Za-z0-9._:-]) makes the call idempotent: a repeat returns the first
// outcome. TimeoutMS 0 (or absent) means the coordinator's default (30000); at most 3600000.
// Steps run in order, one XA branch per resource; Messages are the broker's branch.
type GlobalTxRequest struct {
	ID        string         `json:"id,omitempty"`
	TimeoutMS int64          `json:"timeout_ms,omitempty"`
	Steps     []GlobalTxStep `json:"steps,omitempty"`
	Messages  []TxMessage    `json:"messages,omitempty"`
}

// GlobalTxStepResult is what one step did.
type GlobalTxStepResult struct {
	RowsAffected int64 `json:"rows_affected"`
}

// Global transaction statuses.
const (
	GlobalActive      = "active"
	GlobalPreparing   = "preparing"
	GlobalCommitting  = "committing"
	GlobalCommitted   = "committed"
	GlobalRollingBack = "rolling_back"
	GlobalRolledBack  = "rolled_back"
	GlobalInDoubt     = "in_doubt"
)

// GlobalTxResult answers POST /v1/global-transactions: 200 with Status "committed" (or
// "committing": the commit is decided and durable, phase 2 of some branch is left to
// recovery) and Steps and Offsets; 409 with Status "rolled_back", "rolling_back" (rolled back
// too: nothing is committed, recovery still applies the rollback to a prepared branch whose
// database was unreachable) or "in_doubt", and Error.
// Duplicate is true when the id had been seen: the result is the first outcome, without
// Steps (and without Offsets once the server restarted).
type GlobalTxResult struct {
	ID        string               `json:"id"`
	Gtrid     string               `json:"gtrid,omitempty"`
	Status    string               `json:"status"`
	Steps     []GlobalTxStepResult `json:"steps,omitempty"`
	Offsets   []TopicPosition      `json:"offsets,omitempty"`
	Error     *Error               `json:"error,omitempty"`
	Duplicate bool                 `json:"duplicate,omitempty"`
}

// GlobalTxBranch is one branch of a global transaction. Xid's gtrid and bqual are hex, as in
// the XA resource endpoints.
type GlobalTxBranch struct {
	Resource string `json:"resource"`
	Xid      Xid    `json:"xid"`
	State    string `json:"state"`
}

// GlobalTx answers GET /v1/global-transactions/{id} and POST .../resolve. Times are RFC 3339
// with milliseconds, UTC; DecidedAt and FinishedAt are null until then. Error says why it
// rolled back or is in doubt, or how an operator resolved it (ResolvedBy: who).
type GlobalTx struct {
	ID         string           `json:"id"`
	Gtrid      string           `json:"gtrid"`
	Status     string           `json:"status"`
	Branches   []GlobalTxBranch `json:"branches"`
	CreatedAt  string           `json:"created_at"`
	DecidedAt  *string          `json:"decided_at"`
	FinishedAt *string          `json:"finished_at"`
	Deadline   string           `json:"deadline"`
	Error      *Error           `json:"error,omitempty"`
	ResolvedBy string           `json:"resolved_by,omitempty"`
	Offsets    []TopicPosition  `json:"offsets,omitempty"`
}

// GlobalTxList answers GET /v1/global-transactions?status=&resolved=&order=&limit=: the
// first limit of the matching transactions, oldest first unless order=newest.
type GlobalTxList struct {
	Transactions []GlobalTx `json:"transactions"`
	// Counts has every retained transaction by status (each status present, 0 included),
	// whatever status, resolved, order and limit select.
	Counts map[string]int `json:"counts"`
	// Total is how many transactions match status and resolved; Truncated is true when
	// limit cut the list (Total is more than len(Transactions)).
	Total     int  `json:"total"`
	Truncated bool `json:"truncated"`
}

// GlobalTxResolveRequest is the body of POST /v1/global-transactions/{id}/resolve (admin):
// Decision is "commit" or "rollback"; Operator (optional) names the person, and is logged
// with the token's name.
type GlobalTxResolveRequest struct {
	Decision string `json:"decision"`
	Operator string `json:"operator,omitempty"`
}
