package api

// recordAudit stores an audit entry for action (e.g. "key.create",
// "webhook.delete") on the resource with id resourceID, in the same
// transaction as the change it records. The entry carries the caller's user
// id and key id, the client IP, the time and the request id.
//
// TODO(issue 4): store and serve the entries (GET /api/v1/audit).
func (s *Server) recordAudit(tx Tx, c *call, action, resourceID string) error {
	return nil
}
