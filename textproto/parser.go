package textproto

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imagomq/imago/broker"
)

// command is a request's command word.
type command uint8

const (
	cmdNone command = iota // an empty line
	cmdPut
	cmdGet
	cmdOffset
	cmdTransaction
	cmdStats
	cmdVersion
	cmdQuit
	cmdAuth
)

var commandNames = [...]string{cmdNone: "", cmdPut: "put", cmdGet: "get", cmdOffset: "offset",
	cmdTransaction: "transaction", cmdStats: "stats", cmdVersion: "version", cmdQuit: "quit", cmdAuth: "auth"}

func (c command) String() string { return commandNames[c] }

// Transaction verbs (the <type> word of transaction).
const (
	txBegin          = "BEGIN"
	txEnd            = "END"
	txPrepare        = "PREPARE"
	txCommitOne      = "COMMIT_ONE_PHASE"
	txCommitTwo      = "COMMIT_TWO_PHASE"
	txRollback       = "ROLLBACK"
	txRecover        = "RECOVER"
	txForget         = "FORGET"
	maxTxTimeoutSecs = 3600
)

// Put flag bits: the record attribute bits of docs/protocol.md.
const (
	FlagKey  = 1 // the payload starts with a u32 key length and the key
	FlagJSON = 2 // the value is JSON text
)

// request is one parsed request line.
type request struct {
	cmd       command
	topic     string
	group     string
	partition int
	offset    int64
	length    int  // put: payload bytes
	lengthOK  bool // put: length parsed, so the payload can be skipped even if the line has another error
	// lengthOver: put's length is a number over 2^31-1 (even past int64); lengthWord holds it.
	lengthOver bool
	lengthWord string
	flag       uint32
	txkey      string
	session    string
	txType     string
	timeout    time.Duration // transaction BEGIN; 0: the broker's default
	maxBytes   int
	item       string // stats
	token      string // auth; never logged or echoed
	opaque     int64
}

// errLine is a problem with a request line; the text names it and becomes a 400 answer.
type errLine struct{ msg string }

func (e *errLine) Error() string { return e.msg }

func lineErr(format string, args ...any) error { return &errLine{msg: fmt.Sprintf(format, args...)} }

// Usage lines, quoted in 400 answers for a wrong argument count.
var usage = map[command]string{
	cmdPut:         "put <topic> <partition> <length> <flag> [<txkey>] <opaque>",
	cmdGet:         "get <topic> <group> <partition> <offset> <max_bytes> <opaque>",
	cmdOffset:      "offset <topic> <group> <partition> <offset> <opaque>",
	cmdTransaction: "transaction <txkey> <session> <type> [<timeout_s>] <opaque>",
	cmdStats:       "stats [<item>] <opaque>",
	cmdVersion:     "version <opaque>",
	cmdQuit:        "quit",
	cmdAuth:        "auth <token> <opaque>",
}

// parseLine parses one request line (without or with its "\r\n"). On error the request still
// carries what could be read: the command, the opaque when the last word is a number, and for
// put the payload length when it is valid, so that the caller can skip the payload and answer
// with the client's opaque. It never echoes an auth token.
func parseLine(line []byte) (request, error) {
	line = bytes.TrimRight(line, "\r\n")
	var r request
	words := splitWords(line)
	if len(words) == 0 {
		return r, nil
	}
	// The opaque is the last word of every command but quit; take it first so that every
	// error can be answered with it.
	last := words[len(words)-1]
	if len(words) > 1 {
		if n, err := strconv.ParseInt(last, 10, 64); err == nil {
			r.opaque = n
		}
	}
	switch words[0] {
	case "put":
		r.cmd = cmdPut
		return r, parsePut(&r, words[1:])
	case "get":
		r.cmd = cmdGet
		return r, parseGet(&r, words[1:])
	case "offset":
		r.cmd = cmdOffset
		return r, parseOffset(&r, words[1:])
	case "transaction":
		r.cmd = cmdTransaction
		return r, parseTransaction(&r, words[1:])
	case "stats":
		r.cmd = cmdStats
		return r, parseStats(&r, words[1:])
	case "version":
		r.cmd = cmdVersion
		switch len(words) {
		case 1: // typed by hand: opaque 0
			return r, nil
		case 2:
			return r, parseOpaque(&r, words[1])
		}
		return r, argCount(cmdVersion, len(words)-1)
	case "quit":
		r.cmd = cmdQuit
		r.opaque = 0
		if len(words) != 1 {
			return r, argCount(cmdQuit, len(words)-1)
		}
		return r, nil
	case "auth":
		r.cmd = cmdAuth
		if len(words) != 3 {
			return r, argCount(cmdAuth, len(words)-1)
		}
		r.token = words[1]
		return r, parseOpaque(&r, words[2])
	}
	return r, lineErr("unknown command %s; the commands are put, get, offset, transaction, stats, version, quit and auth", quoteWord(words[0]))
}

// splitWords splits on runs of spaces and tabs.
func splitWords(line []byte) []string {
	s := string(line)
	words := make([]string, 0, 8)
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return words
		}
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			return append(words, s)
		}
		words = append(words, s[:i])
		s = s[i:]
	}
}

// quoteWord quotes a client's word for an answer, shortened so that answers stay small.
func quoteWord(w string) string { return strconv.Quote(shortWord(w)) }

// shortWord shortens a client's word for an answer.
func shortWord(w string) string {
	if len(w) > 32 {
		return w[:32] + "..."
	}
	return w
}

func argCount(c command, got int) error {
	return lineErr("%s takes %s, got %d arguments; usage: %s", c, argsWanted(c), got, usage[c])
}

func argsWanted(c command) string {
	switch c {
	case cmdPut:
		return "5 or 6 arguments"
	case cmdGet:
		return "6 arguments"
	case cmdOffset:
		return "5 arguments"
	case cmdTransaction:
		return "4 or 5 arguments"
	case cmdStats:
		return "at most 2 arguments"
	case cmdVersion:
		return "at most 1 argument"
	case cmdQuit:
		return "no arguments"
	case cmdAuth:
		return "2 arguments"
	}
	return "other arguments"
}

func parseOpaque(r *request, w string) error {
	n, err := strconv.ParseInt(w, 10, 64)
	if err != nil {
		return lineErr("opaque %s is not an integer", quoteWord(w))
	}
	r.opaque = n
	return nil
}

func parseName(what, w string) (string, error) {
	if !broker.ValidName(w) {
		return "", lineErr("%s name %s is invalid: use 1 to 249 characters from A-Z, a-z, 0-9, '.', '_' and '-'", what, quoteWord(w))
	}
	if broker.ReservedName(w) {
		// As over HTTP: no topic or group is named "." or "..", which a path (a URL, a
		// ZooKeeper node of the offset store) resolves away.
		return "", lineErr("%s name %s is reserved: choose another name", what, quoteWord(w))
	}
	return w, nil
}

func parseInt(what, w string, min, max int64) (int64, error) {
	n, err := strconv.ParseInt(w, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, lineErr("%s %s is out of range", what, quoteWord(w))
		}
		return 0, lineErr("%s %s is not an integer", what, quoteWord(w))
	}
	if n < min || n > max {
		if n < 0 && min >= 0 {
			return 0, lineErr("%s %d is negative", what, n)
		}
		return 0, lineErr("%s %d is out of range [%d, %d]", what, n, min, max)
	}
	return n, nil
}

const maxInt32 = 1<<31 - 1

// parseLength parses put's <length>: lengthOK when it is 0 to 2^31-1, lengthOver when it is a
// larger number.
func parseLength(r *request, w string) error {
	n, err := strconv.ParseInt(w, 10, 64)
	switch {
	case err == nil && n >= 0 && n <= maxInt32:
		r.length, r.lengthOK = int(n), true
		return nil
	case err == nil && n > maxInt32, errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(w, "-"):
		r.lengthOver, r.lengthWord = true, w
		return lineErr("length %s is out of range [0, %d]", quoteWord(w), maxInt32)
	case err == nil:
		return lineErr("length %d is negative", n)
	case errors.Is(err, strconv.ErrRange):
		return lineErr("length %s is negative", quoteWord(w))
	}
	return lineErr("length %s is not an integer", quoteWord(w))
}

func parsePut(r *request, a []string) error {
	if len(a) != 5 && len(a) != 6 {
		// Still learn the length when it is where it belongs, so that the payload is skipped.
		if len(a) >= 3 {
			parseLength(r, a[2])
		}
		return argCount(cmdPut, len(a))
	}
	if err := parseLength(r, a[2]); err != nil {
		return err
	}
	if err := parseOpaque(r, a[len(a)-1]); err != nil {
		return err
	}
	var err error
	if r.topic, err = parseName("topic", a[0]); err != nil {
		return err
	}
	p, err := parseInt("partition", a[1], -1, maxInt32)
	if err != nil {
		return err
	}
	r.partition = int(p)
	f, err := parseInt("flag", a[3], 0, maxInt32)
	if err != nil {
		return err
	}
	if f&^(FlagKey|FlagJSON) != 0 {
		return lineErr("flag %d has unknown bits; use 0, %d (key prefix), %d (JSON value) or %d", f, FlagKey, FlagJSON, FlagKey|FlagJSON)
	}
	r.flag = uint32(f)
	if len(a) == 6 {
		if r.txkey, err = parseTxKey(a[4]); err != nil {
			return err
		}
		if r.txkey == localNewKey {
			return lineErr("txkey TX:- only begins a transaction; put needs the txkey that BEGIN answered")
		}
	}
	return nil
}

// localNewKey is the txkey of a local BEGIN: the broker chooses the id.
const localNewKey = "TX:-"

// parseTxKey checks the shape of TX:<id> or XID:<format_id>:<gtrid hex>:<bqual hex>; the
// handlers parse XIDs fully (broker.ParseXid).
func parseTxKey(w string) (string, error) {
	switch {
	case strings.HasPrefix(w, "TX:") && len(w) > 3 && len(w) <= 128:
		return w, nil
	case strings.HasPrefix(w, "XID:") && len(w) <= 4+11+1+128+1+128:
		return w, nil
	}
	return "", lineErr("txkey %s is invalid: want TX:<id> for a local transaction or XID:<format_id>:<gtrid hex>:<bqual hex> for an XA branch", quoteWord(w))
}

func parseGet(r *request, a []string) error {
	if len(a) != 6 {
		return argCount(cmdGet, len(a))
	}
	if err := parseOpaque(r, a[5]); err != nil {
		return err
	}
	if err := parseTopicGroupPosition(r, a); err != nil {
		return err
	}
	mb, err := parseInt("max_bytes", a[4], 1, maxInt32)
	if err != nil {
		return err
	}
	r.maxBytes = int(mb)
	return nil
}

func parseOffset(r *request, a []string) error {
	if len(a) != 5 {
		return argCount(cmdOffset, len(a))
	}
	if err := parseOpaque(r, a[4]); err != nil {
		return err
	}
	return parseTopicGroupPosition(r, a)
}

// parseTopicGroupPosition parses the <topic> <group> <partition> <offset> that get and offset
// start with.
func parseTopicGroupPosition(r *request, a []string) error {
	var err error
	if r.topic, err = parseName("topic", a[0]); err != nil {
		return err
	}
	if r.group, err = parseName("group", a[1]); err != nil {
		return err
	}
	p, err := parseInt("partition", a[2], 0, maxInt32)
	if err != nil {
		return err
	}
	r.partition = int(p)
	r.offset, err = parseInt("offset", a[3], 0, 1<<63-1)
	return err
}

func parseTransaction(r *request, a []string) error {
	if len(a) != 4 && len(a) != 5 {
		return argCount(cmdTransaction, len(a))
	}
	if err := parseOpaque(r, a[len(a)-1]); err != nil {
		return err
	}
	r.txType = a[2]
	switch r.txType {
	case txBegin, txEnd, txPrepare, txCommitOne, txCommitTwo, txRollback, txRecover, txForget:
	default:
		return lineErr("transaction type %s is unknown; use BEGIN, END, PREPARE, COMMIT_ONE_PHASE, COMMIT_TWO_PHASE, ROLLBACK, RECOVER or FORGET", quoteWord(a[2]))
	}
	r.session = a[1]
	if len(r.session) > 128 {
		return lineErr("session is longer than 128 bytes")
	}
	if r.txType == txRecover {
		r.txkey = a[0] // ignored: RECOVER lists every branch
	} else {
		var err error
		if r.txkey, err = parseTxKey(a[0]); err != nil {
			return err
		}
	}
	if len(a) == 5 {
		if r.txType != txBegin {
			return lineErr("a timeout is only taken by BEGIN")
		}
		s, err := parseInt("timeout_s", a[3], 1, maxTxTimeoutSecs)
		if err != nil {
			return err
		}
		r.timeout = time.Duration(s) * time.Second
	}
	return nil
}

func parseStats(r *request, a []string) error {
	switch len(a) {
	case 0: // typed by hand: opaque 0
		return nil
	case 1:
		if _, err := strconv.ParseInt(a[0], 10, 64); err == nil {
			return nil // the opaque, already taken
		}
		r.item = a[0] // typed by hand: "stats topics"
		return nil
	case 2:
		r.item = a[0]
		return parseOpaque(r, a[1])
	}
	return argCount(cmdStats, len(a))
}

// String formats the request as a line (without "\r\n") that parses to the same request.
// The auth token is replaced: the line is for logs and tests.
func (r request) String() string {
	o := strconv.FormatInt(r.opaque, 10)
	switch r.cmd {
	case cmdPut:
		s := fmt.Sprintf("put %s %d %d %d", r.topic, r.partition, r.length, r.flag)
		if r.txkey != "" {
			s += " " + r.txkey
		}
		return s + " " + o
	case cmdGet:
		return fmt.Sprintf("get %s %s %d %d %d %s", r.topic, r.group, r.partition, r.offset, r.maxBytes, o)
	case cmdOffset:
		return fmt.Sprintf("offset %s %s %d %d %s", r.topic, r.group, r.partition, r.offset, o)
	case cmdTransaction:
		s := fmt.Sprintf("transaction %s %s %s", r.txkey, r.session, r.txType)
		if r.timeout > 0 {
			s += " " + strconv.FormatInt(int64(r.timeout/time.Second), 10)
		}
		return s + " " + o
	case cmdStats:
		if r.item != "" {
			return "stats " + r.item + " " + o
		}
		return "stats " + o
	case cmdVersion:
		return "version " + o
	case cmdQuit:
		return "quit"
	case cmdAuth:
		return "auth <token> " + o
	}
	return ""
}
