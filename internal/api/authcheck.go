package api

// authCheck: GET /api/v1/auth/check — 204 when the request's API key
// (Authorization: Bearer or X-API-Key) is valid; the route's access check
// answers 401 for a missing or unknown key. The edge's forward
// authentication ([auth] check_url) asks this before it stores a request,
// so a bad key is refused at intake instead of being queued.
func (s *Server) authCheck(c *call) (result, error) { return noContent() }
