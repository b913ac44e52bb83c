package api

// WhoAmI answers GET /v1/whoami: what the caller's token may do, so a client (the console)
// can offer only the actions it is allowed. Auth is false when the server has no tokens
// configured (then every right is granted, and Name is empty). The patterns themselves are
// not shown.
type WhoAmI struct {
	Auth     bool   `json:"auth"`
	Name     string `json:"name,omitempty"`
	Admin    bool   `json:"admin"`
	Producer bool   `json:"producer"`
	Consumer bool   `json:"consumer"`
}
