package xa

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/imagomq/imago/broker"
)

// Xid is an XA branch id: format id, global transaction id (gtrid) and branch qualifier.
type Xid = broker.Xid

// Imago's Xid format.
//
//	format id  0x494D4731 ("IMG1" in ASCII), 1229801265
//	gtrid      40 ASCII bytes: node id (16 lowercase hex digits) + transaction id (24 lowercase hex digits)
//	bqual      the resource's name: 1–24 bytes of [A-Za-z0-9_.-]
//
// The whole Xid is printable ASCII, so XA RECOVER shows it readably, and gtrid+bqual is at most
// 64 bytes (MySQL's limit). PostgreSQL's gid is "494d4731_<gtrid>_<hex of bqual>": hex digits
// and underscores only, at most 98 characters (PostgreSQL allows 199).
const (
	FormatID       int32 = 0x494D4731
	nodeIDLen            = 16
	txIDLen              = 24
	gtridLen             = nodeIDLen + txIDLen
	maxResourceLen       = 24
	pgGIDPrefix          = "494d4731_"
)

// ValidResourceName reports whether name can be a resource name (and so a branch qualifier).
func ValidResourceName(name string) error {
	if len(name) < 1 || len(name) > maxResourceLen {
		return fmt.Errorf("resource name %q: must be 1 to %d characters", name, maxResourceLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("resource name %q: only letters, digits, '_', '.' and '-' are allowed", name)
		}
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validNodeID checks a node id: 16 lowercase hex digits.
func validNodeID(s string) error {
	if len(s) != nodeIDLen || !isLowerHex(s) {
		return fmt.Errorf("node id %q: want %d lowercase hex digits", s, nodeIDLen)
	}
	return nil
}

// makeXid builds the Xid of resource's branch of the global transaction gtrid.
func makeXid(gtrid, resource string) Xid {
	return Xid{FormatID: FormatID, Gtrid: []byte(gtrid), Bqual: []byte(resource)}
}

// parseXid checks that x is in Imago's format and returns its gtrid, node id and resource.
func parseXid(x Xid) (gtrid, node, resource string, ok bool) {
	if x.FormatID != FormatID || len(x.Gtrid) != gtridLen {
		return "", "", "", false
	}
	g := string(x.Gtrid)
	if !isLowerHex(g) || ValidResourceName(string(x.Bqual)) != nil {
		return "", "", "", false
	}
	return g, g[:nodeIDLen], string(x.Bqual), true
}

// mysqlXid is the xid as MySQL's XA statements take it: two hex literals and the format id,
// built only from the validated bytes (never a quoted string).
func mysqlXid(x Xid) string {
	return "X'" + hex.EncodeToString(x.Gtrid) + "',X'" + hex.EncodeToString(x.Bqual) + "'," + strconv.FormatInt(int64(x.FormatID), 10)
}

// pgGID is PostgreSQL's gid for x: only [0-9a-f_], so it can be spliced into PREPARE
// TRANSACTION '…' (which takes no bind parameter). It panics on an Xid of another format,
// which the coordinator never builds.
func pgGID(x Xid) string {
	g, _, _, ok := parseXid(x)
	if !ok {
		panic("xa: pgGID of a foreign xid")
	}
	return pgGIDPrefix + g + "_" + hex.EncodeToString(x.Bqual)
}

// parsePGGID reverses pgGID; ok is false for a gid of another format.
func parsePGGID(gid string) (Xid, bool) {
	rest, found := strings.CutPrefix(gid, pgGIDPrefix)
	if !found {
		return Xid{}, false
	}
	g, b, found := strings.Cut(rest, "_")
	if !found || len(g) != gtridLen || !isLowerHex(g) || !isLowerHex(b) {
		return Xid{}, false
	}
	bq, err := hex.DecodeString(b)
	if err != nil {
		return Xid{}, false
	}
	x := Xid{FormatID: FormatID, Gtrid: []byte(g), Bqual: bq}
	if _, _, _, ok := parseXid(x); !ok {
		return Xid{}, false
	}
	return x, true
}

// pgLiteral quotes a gid for PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED after
// checking it holds only hex digits and underscores.
func pgLiteral(gid string) (string, error) {
	for i := 0; i < len(gid); i++ {
		c := gid[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '_') {
			return "", fmt.Errorf("gid %q holds a character other than [0-9a-f_]", gid)
		}
	}
	if len(gid) == 0 || len(gid) > 199 {
		return "", fmt.Errorf("gid must be 1 to 199 characters, got %d", len(gid))
	}
	return "'" + gid + "'", nil
}
