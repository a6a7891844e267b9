package buffer

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"net/http"
	"time"
)

// Key layout. Every key starts with one byte naming its kind; partitions are
// uint16 big-endian and sequence numbers uint64 big-endian, so the keys of a
// partition sort in Seq order and a seek lands on the first record after a
// cursor.
//
// Outcomes sort below every other kind, and their ids (UUIDv7) by time, so
// a new outcome sorts above every kept one and below everything else a
// commit writes. A memtable's key range then starts at its first new
// outcome, and the compaction of a level-0 table into the next level leaves
// the kept outcomes alone. Under 'o', between the finished sets and the
// segments, every such compaction rewrote all kept outcomes at that level:
// the bytes written per delivered request doubled as outcomes accumulated.
//
//	s <p> <first> segment: the records of p appended by one group commit,
//	              Seqs first, first+1, ... → encoded segment
//	a <p> <first> finished set of a segment some of whose records are final
//	              (acknowledged, dead-lettered, quarantined) → encoded bitmap
//	r <p> <seq>   retry state of a record that failed an attempt → mutable section
//	q <p> <seq>   queued record on its own (earlier versions, and replayed
//	              dead letters) → encoded record
//	d <p> <seq>   dead letter              → encoded dead letter (record + outcome)
//	i <id>        id index of dead letters (and of records stored by
//	              earlier versions) → state byte, p, seq
//	0 <id>        outcome (kept OutcomeTTL, within OutcomeMaxBytes) → encoded outcome
//	o <id>        outcome written by earlier versions: read, counted and trimmed
//	              (oldest first) like the others until none is left
//	k <idem key>  unscoped idempotency key of earlier versions (TTL; no longer read)
//	K <scope>     scoped idempotency key (TTL IdempotencyTTL) → encoded idem entry
//	P <p> <key>   parked key               → id of the dead letter parking it
//	x <orig key>  quarantined value        → the raw bytes as found
//	m <p>         partition counters       → encoded partMeta
//	g             global counters          → encoded globalMeta
//	L             partition count at the last Open → uvarint (see rehome.go)
const (
	prefixQueue      byte = 'q'
	prefixSeg        byte = 's'
	prefixSegDone    byte = 'a'
	prefixRetry      byte = 'r'
	prefixDead       byte = 'd'
	prefixIndex      byte = 'i'
	prefixOutcome    byte = '0'
	prefixOutcomeV1  byte = 'o'
	prefixIdem       byte = 'k'
	prefixIdemScoped byte = 'K'
	prefixParked     byte = 'P'
	prefixQuarantine byte = 'x'
	prefixMeta       byte = 'm'
	prefixGlobal     byte = 'g'
)

// maxPartitions is the number of partitions the key layout can address.
const maxPartitions = math.MaxUint16 + 1

// Index states, the first byte of an id index value.
const (
	indexQueued byte = 'q'
	indexDead   byte = 'd'
)

// seqKey returns the key of (prefix, p, seq): one byte, uint16 p, uint64 seq.
func seqKey(prefix byte, p int, seq uint64) []byte {
	k := make([]byte, 11)
	k[0] = prefix
	binary.BigEndian.PutUint16(k[1:3], uint16(p))
	binary.BigEndian.PutUint64(k[3:11], seq)
	return k
}

// partPrefix returns the 3-byte prefix of partition p's keys of one kind.
func partPrefix(prefix byte, p int) []byte {
	return []byte{prefix, byte(p >> 8), byte(p)}
}

// parseSeqKey splits a key made by seqKey. ok is false for any other shape.
func parseSeqKey(k []byte) (prefix byte, p int, seq uint64, ok bool) {
	if len(k) != 11 {
		return 0, 0, 0, false
	}
	return k[0], int(binary.BigEndian.Uint16(k[1:3])), binary.BigEndian.Uint64(k[3:11]), true
}

func stringKey(prefix byte, s string) []byte {
	k := make([]byte, 1+len(s))
	k[0] = prefix
	copy(k[1:], s)
	return k
}

func parkedKey(p int, key string) []byte {
	k := make([]byte, 3+len(key))
	copy(k, partPrefix(prefixParked, p))
	copy(k[3:], key)
	return k
}

func metaKey(p int) []byte { return partPrefix(prefixMeta, p) }

var globalKey = []byte{prefixGlobal}

func quarantineKey(orig []byte) []byte {
	k := make([]byte, 1+len(orig))
	k[0] = prefixQuarantine
	copy(k[1:], orig)
	return k
}

// Encoding versions. Every value starts with its version byte; records,
// outcomes and dead letters end with a CRC-32C of everything before it, so a
// torn or foreign value is detected rather than misread.
const (
	recordV1     byte = 1
	recordV2     byte = 2 // v1 + the idempotency scope after the query
	outcomeV1    byte = 1
	outcomeV2    byte = 2 // v1 + the idempotency scope at the end
	segmentV1    byte = 1
	deadV1       byte = 1
	partMetaV1   byte = 1
	globalMetaV1 byte = 1
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("buffer: corrupt value")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
}

// unixNano encodes t as Unix nanoseconds; the zero time is 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano is the inverse of unixNano.
func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, h http.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for name, vals := range h {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(vals)))
		for _, v := range vals {
			b = appendString(b, v)
		}
	}
	return b
}

func headerSize(h http.Header) int {
	n := binary.MaxVarintLen64
	for name, vals := range h {
		n += len(name) + 2*binary.MaxVarintLen64
		for _, v := range vals {
			n += len(v) + binary.MaxVarintLen64
		}
	}
	return n
}

func appendCRC(b []byte) []byte {
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// checkCRC verifies the trailing CRC and returns the value without it.
func checkCRC(v []byte, what string) ([]byte, error) {
	if len(v) < 5 {
		return nil, corruptf("%s: %d bytes", what, len(v))
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(v[len(v)-4:]) {
		return nil, corruptf("%s: checksum mismatch", what)
	}
	return body, nil
}

// decoder reads the fields appended by the append* helpers. The first error
// sticks; every length is checked against what is left, so garbage never
// makes it allocate more than the value's size.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = corruptf("truncated or invalid %s", what)
	}
	d.b = nil
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must not exceed the bytes left divided by min
// (the least each element takes), and int.
func (d *decoder) count(what string, min int) int {
	v := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if v > uint64(len(d.b)/min) {
		d.fail(what)
		return 0
	}
	return int(v)
}

func (d *decoder) bytes(what string) []byte {
	n := d.count(what, 1)
	if d.err != nil {
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string(what string) string { return string(d.bytes(what)) }

func (d *decoder) header(what string) http.Header {
	n := d.count(what, 2) // a name and a value count take at least 2 bytes
	if d.err != nil || n == 0 {
		return nil
	}
	h := make(http.Header, n)
	for range n {
		name := d.string(what)
		nv := d.count(what, 1)
		if d.err != nil {
			return nil
		}
		vals := make([]string, 0, nv)
		for range nv {
			vals = append(vals, d.string(what))
		}
		if d.err != nil {
			return nil
		}
		h[name] = vals
	}
	return h
}

func (d *decoder) int(what string) int {
	v := d.uvarint(what)
	if v > math.MaxInt32 {
		d.fail(what)
		return 0
	}
	return int(v)
}

// Record value, version 1:
//
//	version byte
//	uvarint length of the mutable section, then the mutable section:
//	    uvarint attempts, varint next attempt (Unix ns, 0 = zero), string last error
//	string id, key, idempotency key, method, path, raw query
//	varint received at (Unix ns)
//	header: uvarint n, n × (string name, uvarint m, m × string value)
//	bytes body
//	uint32 CRC-32C (big-endian) of all of the above
//
// Partition and Seq are not stored: they are the record's key. The mutable
// section comes first so that Nack can replace it without decoding the rest.

// recordSize returns an upper bound of the encoded size of r.
func recordSize(r *Record) int {
	return 1 + 4*binary.MaxVarintLen64 + len(r.LastError) +
		len(r.ID) + len(r.Key) + len(r.IdempotencyKey) + len(r.IdempotencyScope) + len(r.Method) + len(r.Path) + len(r.RawQuery) +
		7*binary.MaxVarintLen64 + headerSize(r.Header) + len(r.Body) + binary.MaxVarintLen64 + 4
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendMutable(b []byte, attempts int, next time.Time, lastErr string) []byte {
	a := uint64(max(attempts, 0))
	n := unixNano(next)
	zz := uint64(n<<1) ^ uint64(n>>63) // zig-zag, as binary.AppendVarint
	size := uvarintLen(a) + uvarintLen(zz) + uvarintLen(uint64(len(lastErr))) + len(lastErr)
	b = binary.AppendUvarint(b, uint64(size))
	b = binary.AppendUvarint(b, a)
	b = binary.AppendVarint(b, n)
	return appendString(b, lastErr)
}

// encodeRecord returns the value stored for r.
func encodeRecord(r *Record) []byte {
	b := make([]byte, 0, recordSize(r))
	b = append(b, recordV2)
	b = appendMutable(b, r.Attempts, r.NextAttemptAt, r.LastError)
	b = appendString(b, r.ID)
	b = appendString(b, r.Key)
	b = appendString(b, r.IdempotencyKey)
	b = appendString(b, r.Method)
	b = appendString(b, r.Path)
	b = appendString(b, r.RawQuery)
	b = appendString(b, r.IdempotencyScope)
	b = binary.AppendVarint(b, unixNano(r.ReceivedAt))
	b = appendHeader(b, r.Header)
	b = appendBytes(b, r.Body)
	return appendCRC(b)
}

// withMutable returns a copy of the record value v with its mutable section
// replaced. v must be a valid record value.
func withMutable(v []byte, attempts int, next time.Time, lastErr string) ([]byte, error) {
	body, err := checkCRC(v, "record")
	if err != nil {
		return nil, err
	}
	if body[0] != recordV1 && body[0] != recordV2 {
		return nil, corruptf("record: unknown version %d", body[0])
	}
	d := decoder{b: body[1:]}
	mlen := d.count("mutable section", 1)
	if d.err != nil {
		return nil, d.err
	}
	rest := d.b[mlen:]
	b := make([]byte, 0, len(v)+len(lastErr)+2*binary.MaxVarintLen64)
	b = append(b, body[0])
	b = appendMutable(b, attempts, next, lastErr)
	b = append(b, rest...)
	return appendCRC(b), nil
}

// decodeRecord decodes a record value stored at (p, seq). With body false
// the body is left nil. It never panics and never allocates more than about
// len(v) bytes, whatever v holds.
func decodeRecord(v []byte, p int, seq uint64, body bool) (*Record, error) {
	b, err := checkCRC(v, "record")
	if err != nil {
		return nil, err
	}
	if b[0] != recordV1 && b[0] != recordV2 {
		return nil, corruptf("record: unknown version %d", b[0])
	}
	d := decoder{b: b[1:]}
	mut := decoder{b: d.bytes("mutable section")}
	r := &Record{Partition: p, Seq: seq}
	r.Attempts = mut.int("attempts")
	r.NextAttemptAt = fromUnixNano(mut.varint("next attempt"))
	r.LastError = mut.string("last error")
	if mut.err != nil {
		return nil, mut.err
	}
	r.ID = d.string("id")
	r.Key = d.string("key")
	r.IdempotencyKey = d.string("idempotency key")
	r.Method = d.string("method")
	r.Path = d.string("path")
	r.RawQuery = d.string("query")
	if b[0] == recordV2 {
		r.IdempotencyScope = d.string("idempotency scope")
	}
	r.ReceivedAt = fromUnixNano(d.varint("received at"))
	r.Header = d.header("header")
	bb := d.bytes("body")
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, corruptf("record: %d trailing bytes", len(d.b))
	}
	if r.ID == "" {
		return nil, corruptf("record: empty id")
	}
	if body && len(bb) > 0 {
		r.Body = append([]byte(nil), bb...)
	}
	return r, nil
}

// Outcome value, version 1: version byte; string id, uvarint partition,
// string key, string status, uvarint attempts, uvarint response status,
// header, bytes body, string last error, varint received at, varint
// finished at; CRC-32C.

func encodeOutcome(o *Outcome, maxBody int) []byte {
	respBody := o.ResponseBody
	if len(respBody) > maxBody {
		respBody = respBody[:maxBody]
	}
	b := make([]byte, 0, 1+len(o.ID)+len(o.Key)+len(o.Status)+len(respBody)+len(o.LastError)+
		headerSize(o.ResponseHeader)+12*binary.MaxVarintLen64+4)
	b = append(b, outcomeV2)
	b = appendString(b, o.ID)
	b = binary.AppendUvarint(b, uint64(max(o.Partition, 0)))
	b = appendString(b, o.Key)
	b = appendString(b, string(o.Status))
	b = binary.AppendUvarint(b, uint64(max(o.Attempts, 0)))
	b = binary.AppendUvarint(b, uint64(max(o.ResponseStatus, 0)))
	b = appendHeader(b, o.ResponseHeader)
	b = appendBytes(b, respBody)
	b = appendString(b, o.LastError)
	b = binary.AppendVarint(b, unixNano(o.ReceivedAt))
	b = binary.AppendVarint(b, unixNano(o.FinishedAt))
	b = appendString(b, o.scope)
	return appendCRC(b)
}

func decodeOutcome(v []byte) (*Outcome, error) {
	b, err := checkCRC(v, "outcome")
	if err != nil {
		return nil, err
	}
	if b[0] != outcomeV1 && b[0] != outcomeV2 {
		return nil, corruptf("outcome: unknown version %d", b[0])
	}
	d := decoder{b: b[1:]}
	o := &Outcome{}
	o.ID = d.string("id")
	o.Partition = d.int("partition")
	o.Key = d.string("key")
	o.Status = Status(d.string("status"))
	o.Attempts = d.int("attempts")
	o.ResponseStatus = d.int("response status")
	o.ResponseHeader = d.header("response header")
	if rb := d.bytes("response body"); len(rb) > 0 {
		o.ResponseBody = append([]byte(nil), rb...)
	}
	o.LastError = d.string("last error")
	o.ReceivedAt = fromUnixNano(d.varint("received at"))
	o.FinishedAt = fromUnixNano(d.varint("finished at"))
	if b[0] == outcomeV2 {
		o.scope = d.string("idempotency scope")
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, corruptf("outcome: %d trailing bytes", len(d.b))
	}
	return o, nil
}

// Dead letter value, version 1: version byte, bytes record value, then the
// outcome value to the end. Both parts carry their own CRC.

func encodeDead(recValue []byte, out []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(recValue)+len(out))
	b = append(b, deadV1)
	b = appendBytes(b, recValue)
	return append(b, out...)
}

// splitDead returns the record value and the outcome value of a dead letter.
func splitDead(v []byte) (rec, out []byte, err error) {
	if len(v) == 0 || v[0] != deadV1 {
		return nil, nil, corruptf("dead letter: bad version")
	}
	d := decoder{b: v[1:]}
	rec = d.bytes("dead letter record")
	if d.err != nil {
		return nil, nil, d.err
	}
	return rec, d.b, nil
}

func decodeDead(v []byte, p int, seq uint64, body bool) (*Record, *Outcome, error) {
	rv, ov, err := splitDead(v)
	if err != nil {
		return nil, nil, err
	}
	rec, err := decodeRecord(rv, p, seq, body)
	if err != nil {
		return nil, nil, err
	}
	out, err := decodeOutcome(ov)
	if err != nil {
		return nil, nil, err
	}
	return rec, out, nil
}

// Index value: state byte, uint16 partition, uint64 seq.

func encodeIndex(state byte, p int, seq uint64) []byte {
	b := make([]byte, 11)
	b[0] = state
	binary.BigEndian.PutUint16(b[1:3], uint16(p))
	binary.BigEndian.PutUint64(b[3:], seq)
	return b
}

func decodeIndex(v []byte) (state byte, p int, seq uint64, err error) {
	if len(v) != 11 || (v[0] != indexQueued && v[0] != indexDead) {
		return 0, 0, 0, corruptf("index entry")
	}
	return v[0], int(binary.BigEndian.Uint16(v[1:3])), binary.BigEndian.Uint64(v[3:]), nil
}

// partMeta are the persisted counters of one partition, written with every
// batch that changes them, so that Open needs no scan.
type partMeta struct {
	NextSeq uint64 // Seq the next Append gets
	Records int64  // queued records
	Bytes   int64  // encoded size of the queued records
	Dead    int64  // dead letters
	Head    uint64 // no queued record has a Seq below Head
}

func encodePartMeta(m partMeta) []byte {
	b := make([]byte, 0, 1+5*binary.MaxVarintLen64)
	b = append(b, partMetaV1)
	b = binary.AppendUvarint(b, m.NextSeq)
	b = binary.AppendUvarint(b, uint64(max(m.Records, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.Bytes, 0)))
	b = binary.AppendUvarint(b, uint64(max(m.Dead, 0)))
	return binary.AppendUvarint(b, m.Head)
}

func decodePartMeta(v []byte) (partMeta, error) {
	if len(v) == 0 || v[0] != partMetaV1 {
		return partMeta{}, corruptf("partition meta: bad version")
	}
	d := decoder{b: v[1:]}
	m := partMeta{
		NextSeq: d.uvarint("next seq"),
		Records: int64(d.uvarint("records")),
		Bytes:   int64(d.uvarint("bytes")),
		Dead:    int64(d.uvarint("dead")),
		Head:    d.uvarint("head"),
	}
	if d.err != nil {
		return partMeta{}, d.err
	}
	if m.Records < 0 || m.Bytes < 0 || m.Dead < 0 {
		return partMeta{}, corruptf("partition meta: negative counter")
	}
	return m, nil
}

// globalMeta are the persisted queue-wide counters.
type globalMeta struct {
	Quarantined  int64
	OutcomeBytes int64 // encoded size of the outcomes kept (absent before: 0)
}

func encodeGlobalMeta(m globalMeta) []byte {
	b := []byte{globalMetaV1}
	b = binary.AppendUvarint(b, uint64(max(m.Quarantined, 0)))
	return binary.AppendUvarint(b, uint64(max(m.OutcomeBytes, 0)))
}

func decodeGlobalMeta(v []byte) (globalMeta, error) {
	if len(v) == 0 || v[0] != globalMetaV1 {
		return globalMeta{}, corruptf("global meta: bad version")
	}
	d := decoder{b: v[1:]}
	m := globalMeta{Quarantined: int64(d.uvarint("quarantined"))}
	if len(d.b) > 0 {
		m.OutcomeBytes = int64(d.uvarint("outcome bytes"))
	}
	if d.err != nil || m.Quarantined < 0 || m.OutcomeBytes < 0 {
		return globalMeta{}, corruptf("global meta")
	}
	return m, nil
}

// Idempotency entry, version 1: version byte, string delivery id, then the
// digestLen-byte digest of the first record's query and body.

const idemV1 byte = 1

// digestLen is the length of a request digest (a truncated SHA-256).
const digestLen = 16

// requestDigest is what tells a replay (same digest) from a conflicting
// reuse of an idempotency scope (another query or body).
func requestDigest(r *Record) [digestLen]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(r.RawQuery)))])
	h.Write([]byte(r.RawQuery))
	h.Write(r.Body)
	var d [digestLen]byte
	copy(d[:], h.Sum(nil))
	return d
}

func encodeIdem(id string, digest [digestLen]byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(id)+digestLen)
	b = append(b, idemV1)
	b = appendString(b, id)
	return append(b, digest[:]...)
}

func decodeIdem(v []byte) (id string, digest [digestLen]byte, err error) {
	if len(v) == 0 || v[0] != idemV1 {
		return "", digest, corruptf("idempotency entry: bad version")
	}
	d := decoder{b: v[1:]}
	id = d.string("idempotency id")
	if d.err != nil || len(d.b) != digestLen || id == "" {
		return "", digest, corruptf("idempotency entry")
	}
	copy(digest[:], d.b)
	return id, digest, nil
}
