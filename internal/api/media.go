package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/objstore"
	"github.com/gabriel-vasile/mimetype"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// MaxMediaBytes is the largest media upload (POST /api/v1/media): 10 MiB.
// It is the one route whose body may exceed MaxBodyBytes.
const MaxMediaBytes = 10 << 20

// mediaTypes are the media types an upload may have, as detected from its
// content (github.com/gabriel-vasile/mimetype), never from its name or the
// client's Content-Type.
var mediaTypes = map[string]bool{
	"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true,
	"video/mp4": true, "video/quicktime": true,
}

// mediaPrefix starts the object key of each upload in the content bucket:
// media/<id>. The owner is kept with the object (its metadata), so every
// pod that shares the bucket serves it, whatever store it uses.
const mediaPrefix = "media/"

// Metadata keys of a media object.
const (
	metaOwner   = "owner"
	metaKeyID   = "key-id"
	metaCreated = "created-at"
)

// MediaInfo describes an uploaded file.
type MediaInfo struct {
	ID          string    `json:"id"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	Owner       string    `json:"owner"` // user id
	CreatedAt   time.Time `json:"created_at"`
}

// typeUnsupportedMedia is the problem type of a refused upload type.
const typeUnsupportedMedia = "urn:flowedge:problem:unsupported-media-type"

// noObjects answers media routes of a server without object storage.
func noObjects() *Problem {
	return problem(http.StatusServiceUnavailable, typeUnavailable, "no object storage is configured")
}

// bodyLimit is the most bytes r's body may have.
func bodyLimit(r *http.Request) int64 {
	if r.Method == http.MethodPost && r.URL.Path == "/api/v1/media" {
		return MaxMediaBytes
	}
	return MaxBodyBytes
}

// uploadMedia: POST /api/v1/media. The body is the file itself, or a
// multipart/form-data form whose "file" part is. Its type is detected from
// its content; only JPEG, PNG, GIF, WebP, MP4 and QuickTime are kept (415
// otherwise). The object is written whole or not at all.
func (s *Server) uploadMedia(c *call) (result, error) {
	if s.opts.Objects == nil {
		return result{}, noObjects()
	}
	data, err := readUpload(c.r)
	if err != nil {
		return result{}, err
	}
	if len(data) == 0 {
		return result{}, badRequest("the upload is empty")
	}
	ct := mimetype.Detect(data).String()
	if i := bytes.IndexByte([]byte(ct), ';'); i >= 0 {
		ct = ct[:i]
	}
	if !mediaTypes[ct] {
		return result{}, problem(http.StatusUnsupportedMediaType, typeUnsupportedMedia,
			"the content is %s; uploads must be JPEG, PNG, GIF, WebP, MP4 or MOV (QuickTime)", ct)
	}
	info := MediaInfo{ID: store.NewID(), ContentType: ct, Size: int64(len(data)), Owner: c.key.user(), CreatedAt: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(c.r.Context(), objstore.Timeout)
	defer cancel()
	err = s.opts.Objects.Content.WriteAll(ctx, mediaPrefix+info.ID, data, &blob.WriterOptions{
		ContentType: ct,
		Metadata:    map[string]string{metaOwner: info.Owner, metaKeyID: c.key.ID, metaCreated: info.CreatedAt.Format(time.RFC3339Nano)},
	})
	if err != nil {
		return result{}, fmt.Errorf("store media: %w", err)
	}
	return created(info, "/api/v1/media/"+info.ID)
}

// readUpload reads the upload: the body, or the "file" part of a form.
func readUpload(r *http.Request) ([]byte, error) {
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		return readBody(r)
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, badRequest(`the form has no "file" part`)
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, err
			}
			return nil, badRequest("the multipart form cannot be read: %v", err)
		}
		if part.FormName() == "file" {
			return io.ReadAll(part)
		}
	}
}

// getMedia: GET /api/v1/media/{id} — the file as uploaded, to its owner
// (and admins); 404 to everyone else.
func (s *Server) getMedia(c *call) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	if s.opts.Objects == nil {
		return result{}, noObjects()
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), objstore.Timeout)
	defer cancel()
	if _, err := s.mediaInfo(ctx, c.key, id); err != nil {
		return result{}, err
	}
	r, err := s.opts.Objects.Content.NewReader(ctx, mediaPrefix+id, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return result{}, notFound("no media %s", id)
	}
	if err != nil {
		return result{}, fmt.Errorf("read media: %w", err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, MaxMediaBytes+1))
	if err != nil {
		return result{}, fmt.Errorf("read media: %w", err)
	}
	return result{status: http.StatusOK, body: data, ctype: r.ContentType()}, nil
}

// mediaInfo reads the attributes of media id as k may see them: 404 when
// it does not exist or belongs to another user.
func (s *Server) mediaInfo(ctx context.Context, k *APIKey, id string) (MediaInfo, error) {
	a, err := s.opts.Objects.Content.Attributes(ctx, mediaPrefix+id)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return MediaInfo{}, notFound("no media %s", id)
	}
	if err != nil {
		return MediaInfo{}, fmt.Errorf("media attributes: %w", err)
	}
	owner := a.Metadata[metaOwner]
	if k.Role != RoleAdmin && owner != k.user() {
		return MediaInfo{}, notFound("no media %s", id)
	}
	created, _ := time.Parse(time.RFC3339Nano, a.Metadata[metaCreated])
	return MediaInfo{ID: id, ContentType: a.ContentType, Size: a.Size, Owner: owner, CreatedAt: created}, nil
}

// checkMediaIDs checks a post's media_ids: at most MaxPostMedia UUIDs, no
// repeats, each an upload the caller may see.
func (s *Server) checkMediaIDs(ctx context.Context, k *APIKey, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if len(ids) > MaxPostMedia {
		return badRequest("media_ids: at most %d, got %d", MaxPostMedia, len(ids))
	}
	if s.opts.Objects == nil {
		return noObjects()
	}
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(ctx, objstore.Timeout)
	defer cancel()
	for i, id := range ids {
		if err := validUUID(fmt.Sprintf("media_ids[%d]", i), id); err != nil {
			return err
		}
		if seen[id] {
			return badRequest("media_ids[%d]: %s is named twice", i, id)
		}
		seen[id] = true
		if _, err := s.mediaInfo(ctx, k, id); err != nil {
			var p *Problem
			if errors.As(err, &p) && p.Status == http.StatusNotFound {
				return badRequest("media_ids[%d]: no media %s", i, id)
			}
			return err
		}
	}
	return nil
}
