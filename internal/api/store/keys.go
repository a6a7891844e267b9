package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flowedge/flowedge/internal/httpx"
)

// Key layout. Every collection is a prefix; parts of a key are separated by
// 0x00, which no process id, resource id or hash can contain, and sequence
// numbers are 8 bytes big-endian so keys sort in sequence order.
//
//	p/<pid>                    Process summary (and the event and job counters)
//	e/<pid>\x00<seq>           Event
//	ed/<pid>\x00<dedup>        seq of the event appended under that dedup name
//	i/<keyid>\x00<kind>\x00<v> idempotency record (with a TTL)
//	k/<id>                     API key (hash of the secret, never the secret)
//	kh/<sha256 hex>            key id, for lookup by secret
//	a/<id>                     App
//	aw/<appid>\x00<wfid>       the workflows an app owns
//	w/<id>                     Workflow
//	j/<id>                     Job
//	jp/<pid>\x00<seq>          job id: the jobs of a process, in submission order
//	jq/<pid>\x00<seq>          job id: jobs not finished yet (queued or running)
//	wh/<id>                    Webhook
//	wq/<partition>/<id>        webhook delivery not made yet (webhook.Record)
const (
	PfxProcess     = "p/"
	PfxEvent       = "e/"
	PfxEventDedup  = "ed/"
	PfxIdem        = "i/"
	PfxKey         = "k/"
	PfxKeyHash     = "kh/"
	PfxApp         = "a/"
	PfxAppWorkflow = "aw/"
	PfxWorkflow    = "w/"
	PfxJob         = "j/"
	PfxProcessJob  = "jp/"
	PfxJobQueue    = "jq/"
	PfxWebhook     = "wh/" // webhook, its signing secret included (needed to sign, so stored as is)
	PfxWebhookQ    = "wq/" // webhook delivery journal, per partition
)

// Key builds prefix + parts joined by 0x00.
func Key(prefix string, parts ...string) []byte {
	n := len(prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, prefix...)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// SeqKey is prefix + pid + 0x00 + seq (8 bytes big-endian).
func SeqKey(prefix, pid string, seq uint64) []byte {
	b := make([]byte, 0, len(prefix)+len(pid)+9)
	b = append(b, prefix...)
	b = append(b, pid...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

// SeqPrefix is the prefix of every SeqKey of pid.
func SeqPrefix(prefix, pid string) []byte { return Key(prefix, pid, "") }

// SplitSeqKey undoes SeqKey.
func SplitSeqKey(prefix string, k []byte) (pid string, seq uint64, err error) {
	rest := k[len(prefix):]
	if len(rest) < 9 || rest[len(rest)-9] != 0 {
		return "", 0, fmt.Errorf("store: malformed key %q", k)
	}
	return string(rest[:len(rest)-9]), binary.BigEndian.Uint64(rest[len(rest)-8:]), nil
}

// DecodeJSON decodes the value v of key k into out.
func DecodeJSON(k, v []byte, out any) error {
	if err := json.Unmarshal(v, out); err != nil {
		return fmt.Errorf("store: decode %q: %w", k, err)
	}
	return nil
}

// GetJSON reads key into v; ErrNotFound if absent.
func GetJSON(tx Tx, key []byte, v any) error {
	b, err := tx.Get(key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("store: decode %q: %w", key, err)
	}
	return nil
}

// PutJSON writes v at key.
// Strings keep <, > and & as they are (no HTML escaping), so an event's
// data is stored as it was sent.
func PutJSON(tx Tx, key []byte, v any) error {
	b, err := httpx.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set(key, b, 0)
}

// Exists reports whether key is present.
func Exists(tx Tx, key []byte) (bool, error) {
	_, err := tx.Get(key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
