package gateway

import (
	"net/http"

	"github.com/imagomq/imago/api"
)

// handleWhoAmI answers GET /v1/whoami: the rights of the caller's token (api.WhoAmI). It is
// read-only and tells nothing a token's holder could not learn by trying; the operator
// console uses it to disable the actions a token may not take (resolving needs admin).
func (s *Server) handleWhoAmI(w http.ResponseWriter, r *http.Request) error {
	if s.auth == nil {
		return writeJSON(w, http.StatusOK, api.WhoAmI{Admin: true, Producer: true, Consumer: true})
	}
	t := callerToken(w)
	if t == nil { // rightAny has already answered 401; kept for safety
		return newError(http.StatusUnauthorized, api.CodeUnauthorized, "a bearer token is required")
	}
	return writeJSON(w, http.StatusOK, api.WhoAmI{Auth: true, Name: t.Name, Admin: t.Admin, Producer: t.Producer(), Consumer: t.Consumer()})
}
