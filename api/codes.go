package api

import "net/http"

// The error codes of the API: Error.Code of an error answer. Programs compare against these
// constants, never against literals. Codes lists each with its status and whether a client
// may retry; docs/http-api.md documents them (a test keeps the two in step). XA verbs answer
// the XA codes instead (XAER_NOTA, XA_RBROLLBACK, ...).
const (
	CodeInvalidJSON             = "invalid_json"
	CodeInvalidField            = "invalid_field"
	CodeInvalidParameter        = "invalid_parameter"
	CodeInvalidName             = "invalid_name"
	CodeInvalidIdempotencyKey   = "invalid_idempotency_key"
	CodeInvalidArgument         = "invalid_argument"
	CodeUnknownResource         = "unknown_resource"
	CodeUnknownOperation        = "unknown_operation"
	CodeUnauthorized            = "unauthorized"
	CodeForbidden               = "forbidden"
	CodeNotFound                = "not_found"
	CodeUnknownTopic            = "unknown_topic"
	CodeUnknownPartition        = "unknown_partition"
	CodeUnknownGroup            = "unknown_group"
	CodeUnknownMember           = "unknown_member"
	CodeUnknownTransaction      = "unknown_transaction"
	CodeMethodNotAllowed        = "method_not_allowed"
	CodeTopicExists             = "topic_exists"
	CodeIdempotencyKeyReused    = "idempotency_key_reused"
	CodeTransactionNotOpen      = "transaction_not_open"
	CodeTransactionTimedOut     = "transaction_timed_out"
	CodeGroupModeConflict       = "group_mode_conflict"
	CodeGroupTopicsConflict     = "group_topics_conflict"
	CodeNotPartitionOwner       = "not_partition_owner"
	CodeNotInDoubt              = "not_in_doubt"
	CodePayloadTooLarge         = "payload_too_large"
	CodeMessageTooLarge         = "message_too_large"
	CodeOffsetOutOfRange        = "offset_out_of_range"
	CodeBackpressure            = "backpressure"
	CodeCorruptRecord           = "corrupt_record"
	CodeInternalError           = "internal_error"
	CodeNotReady                = "not_ready"
	CodeUnavailable             = "unavailable"
	CodeOffsetStoreUnavailable  = "offset_store_unavailable"
	CodeCanceled                = "canceled"
	CodeStorageFailed           = "storage_failed"
	CodeOutcomeUnknown          = "outcome_unknown"
	CodeNoLeader                = "no_leader"
	CodeNotInCluster            = "not_in_cluster"
	CodeMemberExists            = "member_exists"
	CodeMembershipChangePending = "membership_change_pending"
)

// CodeInfo describes one error code.
type CodeInfo struct {
	Code   string
	Status int
	// Retryable: the same request may succeed later unchanged (after Retry-After when the
	// answer has one). A request that is not safe to repeat (a produce without an
	// Idempotency-Key, a global transaction without an id) may still have been applied
	// before a retryable answer such as canceled; only the request's own key makes a repeat
	// safe.
	Retryable bool
	// Description says what the code means.
	Description string
}

// Codes is every error code, in the order of the documentation.
var Codes = []CodeInfo{
	{CodeInvalidJSON, http.StatusBadRequest, false, "the body is not JSON, not UTF-8, or empty, or could not be read (cut short, bad chunked encoding, read timeout)"},
	{CodeInvalidField, http.StatusBadRequest, false, "a body field is missing, unknown or of the wrong type or value"},
	{CodeInvalidParameter, http.StatusBadRequest, false, "a path or query parameter, or a step parameter, is wrong"},
	{CodeInvalidName, http.StatusBadRequest, false, "a topic, group, member or consumer name breaks the naming rule"},
	{CodeInvalidIdempotencyKey, http.StatusBadRequest, false, "the Idempotency-Key is empty, too long, not printable ASCII, or sent twice"},
	{CodeInvalidArgument, http.StatusBadRequest, false, "the broker refused a value"},
	{CodeUnknownResource, http.StatusBadRequest, false, "a global transaction step names a resource that is not configured"},
	{CodeUnknownOperation, http.StatusBadRequest, false, "a global transaction step names an operation the resource does not have"},
	{CodeUnauthorized, http.StatusUnauthorized, false, "no token, or an unknown one"},
	{CodeForbidden, http.StatusForbidden, false, "the token lacks the right"},
	{CodeNotFound, http.StatusNotFound, false, "no such route"},
	{CodeUnknownTopic, http.StatusNotFound, false, "the topic does not exist"},
	{CodeUnknownPartition, http.StatusNotFound, false, "the partition does not exist"},
	{CodeUnknownGroup, http.StatusNotFound, false, "no such group"},
	{CodeUnknownMember, http.StatusNotFound, false, "the member is gone: join again"},
	{CodeUnknownTransaction, http.StatusNotFound, false, "no such transaction, or it was forgotten"},
	{CodeMethodNotAllowed, http.StatusMethodNotAllowed, false, "the route exists with other methods"},
	{CodeTopicExists, http.StatusConflict, false, "the topic exists with another configuration"},
	{CodeIdempotencyKeyReused, http.StatusConflict, false, "the key (produce) or id (global transaction) was used for different messages or steps"},
	{CodeTransactionNotOpen, http.StatusConflict, false, "the local transaction is finished"},
	{CodeTransactionTimedOut, http.StatusConflict, false, "the local transaction timed out and was rolled back"},
	{CodeGroupModeConflict, http.StatusConflict, false, "the join asks for another mode than the group's live members"},
	{CodeGroupTopicsConflict, http.StatusConflict, false, "the clustered join asks for other topics than the group's live members"},
	{CodeNotPartitionOwner, http.StatusConflict, false, "a commit for a partition the member does not own"},
	{CodeNotInDoubt, http.StatusConflict, false, "a resolve for a transaction that is not in doubt"},
	{CodePayloadTooLarge, http.StatusRequestEntityTooLarge, false, "the body is over the limit"},
	{CodeMessageTooLarge, http.StatusRequestEntityTooLarge, false, "one message is over the broker's limit"},
	{CodeOffsetOutOfRange, http.StatusRequestedRangeNotSatisfiable, false, "the offset is outside the partition's range"},
	{CodeBackpressure, http.StatusTooManyRequests, true, "the disk is behind; retry after Retry-After"},
	{CodeCorruptRecord, http.StatusInternalServerError, false, "a stored record failed its checksum on read"},
	{CodeInternalError, http.StatusInternalServerError, false, "a bug; the details are in the server log"},
	{CodeNotReady, http.StatusServiceUnavailable, true, "not configured, starting, shutting down, or storage refuses writes"},
	{CodeUnavailable, http.StatusServiceUnavailable, true, "the server is shutting down"},
	{CodeOffsetStoreUnavailable, http.StatusServiceUnavailable, true, "the offset store failed"},
	{CodeCanceled, http.StatusServiceUnavailable, true, "the request was canceled before it finished"},
	{CodeStorageFailed, http.StatusServiceUnavailable, true, "a write, fsync or checkpoint failed (a full disk, an I/O error): the request was not stored, and writes resume after a restart"},
	{CodeOutcomeUnknown, http.StatusServiceUnavailable, true, "a write to the disk failed, or (in a cluster) the leader lost leadership or a forwarded write got no answer: the request may or may not be stored; retry it only with the same Idempotency-Key (or global transaction id)"},
	{CodeNoLeader, http.StatusServiceUnavailable, true, "cluster mode: no leader is known (an election is under way, or this node cannot reach a quorum); nothing was done, retry after Retry-After"},
	{CodeNotInCluster, http.StatusNotImplemented, false, "cluster mode: the operation is not available on a cluster member yet"},
	{CodeMemberExists, http.StatusConflict, false, "cluster mode: a member with this id exists or existed; a replaced machine joins under a new id"},
	{CodeMembershipChangePending, http.StatusConflict, true, "cluster mode: another membership change is in progress; retry when it is done"},
}

var codeIndex = func() map[string]CodeInfo {
	m := make(map[string]CodeInfo, len(Codes))
	for _, c := range Codes {
		m[c.Code] = c
	}
	return m
}()

// LookupCode returns the description of an error code (ok false for a code not in Codes,
// such as an XA code).
func LookupCode(code string) (CodeInfo, bool) {
	c, ok := codeIndex[code]
	return c, ok
}

// Retryable reports whether a client may send the same request again after an answer with
// this code (see CodeInfo.Retryable). Unknown codes are not retryable.
func Retryable(code string) bool { return codeIndex[code].Retryable }
