package offsetdb

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
)

// TestDecodeRecordKeepsCause: a line whose checksum holds but whose content is refused is a
// bad record, and the error also wraps why (the offset's validation, the JSON decoder's
// error), so a caller can tell an invalid offset from a torn line.
func TestDecodeRecordKeepsCause(t *testing.T) {
	line := encodeRecord(nil, fileRecord{Group: "g", Topic: "t", Partition: 0, Next: -1})
	_, err := decodeRecord(line[:len(line)-1])
	if !errors.Is(err, errBadRecord) || !errors.Is(err, ErrInvalidOffset) {
		t.Fatalf("negative offset: %v; want errBadRecord wrapping ErrInvalidOffset", err)
	}
	// A valid checksum over JSON of the wrong shape: the decoder's error is kept.
	js := `{"g":"g","t":"t","p":"zero","n":1,"at":0}`
	_, err = decodeRecord([]byte(fmt.Sprintf("%08x %s", crc32.Checksum([]byte(js), crcTable), js)))
	var te *json.UnmarshalTypeError
	if !errors.Is(err, errBadRecord) || !errors.As(err, &te) {
		t.Fatalf("wrong JSON type: %v; want errBadRecord wrapping the decoder's *json.UnmarshalTypeError", err)
	}
}

// TestDecodeRecordReservedNameStaysReadable: a record an earlier version stored for group ".."
// (the text door took the name then) still decodes: new writes refuse the name, but an
// offsets file holding one must not read as damaged, which would stop the store's start.
func TestDecodeRecordReservedNameStaysReadable(t *testing.T) {
	line := encodeRecord(nil, fileRecord{Group: "..", Topic: "t", Partition: 0, Next: 3})
	r, err := decodeRecord(line[:len(line)-1])
	if err != nil || r.Group != ".." || r.Next != 3 {
		t.Fatalf("record of group \"..\": %+v %v, want it read back", r, err)
	}
}
