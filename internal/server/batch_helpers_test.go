package server

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"testing"
)

// serveBatch answers the edge's batch delivery the way docs/edge.md fixes it:
// each application/http part is run through h in order, and the answer is
// 200 multipart/mixed with one application/http response per part.
func serveBatch(t *testing.T, w http.ResponseWriter, r *http.Request, h http.Handler) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		http.Error(w, "want multipart/mixed", http.StatusUnsupportedMediaType)
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var answers []*httptest.ResponseRecorder
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(part))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.RemoteAddr = r.RemoteAddr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(r.Context()))
		answers = append(answers, rec)
	}
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	for _, a := range answers {
		pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}})
		if err != nil {
			t.Errorf("batch answer: %v", err)
			return
		}
		resp := a.Result()
		resp.ContentLength = int64(a.Body.Len())
		if err := resp.Write(pw); err != nil {
			t.Errorf("batch answer: %v", err)
			return
		}
	}
	mw.Close()
}
