package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/microcosm-cc/bluemonday"
)

// Key roles. An admin key may also manage keys.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// MinBootstrapKeyLen is the shortest secret FLOW_BOOTSTRAP_KEY may be: keys
// are stored as an unsalted SHA-256, which is only safe for high-entropy
// secrets.
const MinBootstrapKeyLen = 16

// APIKey is an API key as the API shows it: never its secret or hash.
type APIKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Prefix    string    `json:"prefix"` // the secret's first characters, to recognise it
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"` // id of the key that created it
	// UserID is the user the key acts for: the owner of what it creates,
	// named in the request log and the audit log. Keys stored before user
	// ids existed have none and act as "key:<id>".
	UserID string `json:"user_id,omitempty"`
}

// BootstrapUserID is the user of the bootstrap key (FLOW_BOOTSTRAP_KEY),
// and so, by default, of the keys it creates.
const BootstrapUserID = "bootstrap"

// MaxUserIDBytes bounds a user id: 1 to 128 visible ASCII characters.
const MaxUserIDBytes = 128

// user is the user the key acts for.
func (k *APIKey) user() string {
	if k.UserID != "" {
		return k.UserID
	}
	return "key:" + k.ID
}

// keyRecord is an APIKey as stored.
type keyRecord struct {
	APIKey
	Hash string `json:"hash"` // hex SHA-256 of the secret
}

// createdKey is the answer to a key creation: the only time the secret is
// shown.
type createdKey struct {
	APIKey
	Key string `json:"key"`
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// newSecret returns a fresh secret: "flow_" and 256 random bits.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return "flow_" + base64.RawURLEncoding.EncodeToString(b)
}

func secretPrefix(secret string) string {
	if len(secret) > 10 {
		return secret[:10]
	}
	return secret[:len(secret)/2]
}

// putKey stores a new key for secret.
func putKey(tx Tx, k APIKey, secret string) error {
	hash := hashSecret(secret)
	if err := tx.Set(store.Key(store.PfxKeyHash, hash), []byte(k.ID), 0); err != nil {
		return err
	}
	return store.PutJSON(tx, store.Key(store.PfxKey, k.ID), keyRecord{APIKey: k, Hash: hash})
}

// ensureBootstrapKey creates an admin key named "bootstrap" for secret
// unless a key with that secret store.Exists.
func (s *Server) ensureBootstrapKey(ctx context.Context, secret string) error {
	if len(secret) < MinBootstrapKeyLen {
		return fmt.Errorf("api: the bootstrap key must be at least %d characters", MinBootstrapKeyLen)
	}
	var created string
	err := s.store.Update(ctx, func(tx Tx) error {
		created = ""
		found, err := store.Exists(tx, store.Key(store.PfxKeyHash, hashSecret(secret)))
		if err != nil || found {
			return err
		}
		k := APIKey{ID: store.NewID(), Name: "bootstrap", Role: RoleAdmin, Prefix: secretPrefix(secret), CreatedAt: time.Now().UTC(), UserID: BootstrapUserID}
		created = k.ID
		return putKey(tx, k, secret)
	})
	if err == nil && created != "" {
		s.log.Info("created the bootstrap API key", "key_id", created)
	}
	return err
}

// authenticate returns the key the request presents in
// "Authorization: Bearer <key>" or "X-API-Key: <key>", or a 401.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (*keyRecord, error) {
	var secret string
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, tok, found := strings.Cut(a, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return nil, unauthorized(`the Authorization header must be "Bearer <API key>"`)
		}
		secret = strings.TrimSpace(tok)
	} else {
		secret = r.Header.Get("X-API-Key")
	}
	if secret == "" {
		return nil, unauthorized("an API key is required: Authorization: Bearer <key> or X-API-Key: <key>")
	}
	bk, _ := ctx.Value(batchKeysKey{}).(*batchKeys)
	return bk.lookup(secret, func() (*keyRecord, error) {
		var rec keyRecord
		err := s.store.View(ctx, func(tx Tx) error {
			id, err := tx.Get(store.Key(store.PfxKeyHash, hashSecret(secret)))
			if err != nil {
				return err
			}
			return store.GetJSON(tx, store.Key(store.PfxKey, string(id)), &rec)
		})
		if errors.Is(err, ErrNotFound) {
			return nil, unauthorized("the API key is not valid (unknown or deleted)")
		}
		if err != nil {
			return nil, err
		}
		return &rec, nil
	})
}

// batchKeys holds the API keys the parts of one edge batch were
// authenticated with, by secret: a batch's parts mostly carry one
// credential, and each check costs two store reads and a JSON decode (12%
// of api-flow's CPU serving batches, measured). The parts run concurrently:
// the first to check a secret looks it up, the others with that secret wait
// for it. It lives for one batch request, like the parts it serves, which
// run as separate requests would: a key deleted while a batch runs may
// still pass that batch's later parts, and is refused from the next batch
// on. Only keys found are shared; after a refusal or an error each part
// checks again itself.
type batchKeys struct {
	mu    sync.Mutex
	byKey map[string]*batchKey
}

// batchKey is one secret's lookup: rec and ok are set before done closes.
type batchKey struct {
	done chan struct{}
	rec  keyRecord
	ok   bool
}

type batchKeysKey struct{}

// lookup returns the key of secret, looking it up with find once per batch
// while it is found; a nil b (not a batch) always calls find.
func (b *batchKeys) lookup(secret string, find func() (*keyRecord, error)) (*keyRecord, error) {
	if b == nil {
		return find()
	}
	b.mu.Lock()
	e, waiting := b.byKey[secret]
	if !waiting {
		if b.byKey == nil {
			b.byKey = make(map[string]*batchKey)
		}
		e = &batchKey{done: make(chan struct{})}
		b.byKey[secret] = e
	}
	b.mu.Unlock()
	if waiting {
		<-e.done
		if e.ok {
			rec := e.rec
			return &rec, nil
		}
		return find()
	}
	defer close(e.done) // also if find panics: the waiters then check for themselves
	rec, err := find()
	if err != nil {
		b.mu.Lock()
		delete(b.byKey, secret) // later parts check for themselves
		b.mu.Unlock()
		return nil, err
	}
	e.rec, e.ok = *rec, true
	return rec, nil
}

type keyInput struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	UserID string `json:"user_id"`
}

// decodeKey reads and checks a key creation body: a name, a role
// ("member" if absent) and an optional user id ("" if absent).
func decodeKey(p *bluemonday.Policy, body []byte) (keyInput, error) {
	var in keyInput
	if err := decodeJSON(body, &in); err != nil {
		return keyInput{}, err
	}
	name, err := plainText(p, "name", in.Name, 100, true, false)
	if err != nil {
		return keyInput{}, err
	}
	in.Name = name
	switch in.Role {
	case "":
		in.Role = RoleMember
	case RoleMember, RoleAdmin:
	default:
		return keyInput{}, badRequest("role: want %q or %q, got %q", RoleMember, RoleAdmin, in.Role)
	}
	if in.UserID != "" && !httpx.ValidToken(in.UserID, MaxUserIDBytes) {
		return keyInput{}, badRequest("user_id: want 1 to %d visible ASCII characters", MaxUserIDBytes)
	}
	return in, nil
}

// createKey: POST /api/v1/keys {name, role, user_id} → 201 with the
// secret, once. Without user_id the key acts for the creating key's user.
// The creation is audited ("key.create").
func (s *Server) createKey(c *call, tx Tx) (result, error) {
	in, err := decodeKey(s.text, c.body)
	if err != nil {
		return result{}, err
	}
	if in.UserID == "" {
		in.UserID = c.key.user()
	}
	secret := newSecret()
	k := APIKey{ID: store.NewID(), Name: in.Name, Role: in.Role, Prefix: secretPrefix(secret), CreatedAt: time.Now().UTC(), CreatedBy: c.key.ID, UserID: in.UserID}
	if err := putKey(tx, k, secret); err != nil {
		return result{}, fmt.Errorf("store key: %w", err)
	}
	if err := s.recordAudit(tx, c, "key.create", k.ID); err != nil {
		return result{}, err
	}
	res, _ := created(createdKey{APIKey: k, Key: secret}, "/api/v1/keys/"+k.ID)
	// The secret is shown once and never stored, not even as the answer
	// for repeats of this request: they get a 409 naming the key.
	res.forRepeats = conflict("this request already created API key %s; its secret is shown only once: delete that key and create another", k.ID)
	res.forRepeats.Extra = map[string]any{"key_id": k.ID}
	return res, nil
}

// listKeys: GET /api/v1/keys, oldest first.
func (s *Server) listKeys(c *call) (result, error) {
	out, err := listRecords(c.r, s.store, store.PfxKey, func(rec keyRecord) APIKey { return rec.APIKey })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getKey: GET /api/v1/keys/{id}.
func (s *Server) getKey(c *call) (result, error) {
	rec, err := getByID[keyRecord](c, s.store, store.PfxKey, "API key", nil)
	if err != nil {
		return result{}, err
	}
	return ok(rec.APIKey)
}

// deleteKey: DELETE /api/v1/keys/{id}; the key stops working at once (the
// next request looks it up and does not find it). The deletion is audited
// ("key.delete").
func (s *Server) deleteKey(c *call, tx Tx) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	var rec keyRecord
	if err := store.GetJSON(tx, store.Key(store.PfxKey, id), &rec); errors.Is(err, ErrNotFound) {
		return result{}, notFound("no API key %s", id)
	} else if err != nil {
		return result{}, err
	}
	if err := tx.Delete(store.Key(store.PfxKeyHash, rec.Hash)); err != nil {
		return result{}, err
	}
	if err := tx.Delete(store.Key(store.PfxKey, id)); err != nil {
		return result{}, err
	}
	if err := s.recordAudit(tx, c, "key.delete", id); err != nil {
		return result{}, err
	}
	return noContent()
}

// listRecords lists the JSON records under prefix whose keys are UUIDv7
// ids, in id (creation) order, one page at a time; view maps a stored
// record to what the API shows.
func listRecords[S, T any](r *http.Request, st Store, prefix string, view func(S) T) (list[T], error) {
	return listRecordsWhere(r, st, prefix, nil, view)
}

// listRecordsWhere is listRecords of the records keep accepts (nil: all).
func listRecordsWhere[S, T any](r *http.Request, st Store, prefix string, keep func(S) bool, view func(S) T) (list[T], error) {
	cursor, limit, err := page(r)
	if err != nil {
		return list[T]{}, err
	}
	var from []byte
	if cursor != "" {
		if err := validUUID("cursor", cursor); err != nil {
			return list[T]{}, err
		}
		from = append(store.Key(prefix, cursor), 0) // just after the cursor
	}
	out := list[T]{Items: []T{}}
	last := ""
	err = st.View(r.Context(), func(tx Tx) error {
		return tx.Scan([]byte(prefix), from, func(k, v []byte) (bool, error) {
			if len(out.Items) == limit {
				out.NextCursor = last
				return false, nil
			}
			var rec S
			if err := json.Unmarshal(v, &rec); err != nil {
				return false, fmt.Errorf("store: decode %q: %w", k, err)
			}
			if keep != nil && !keep(rec) {
				return true, nil
			}
			out.Items = append(out.Items, view(rec))
			last = string(k[len(prefix):])
			return true, nil
		})
	})
	return out, err
}
