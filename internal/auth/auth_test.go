package auth

import "testing"

func TestSet(t *testing.T) {
	s, err := NewSet([]Token{
		{Name: "payments", Token: "s1", Produce: []string{"settlement.*"}},
		{Name: "audit", Token: "s2", Consume: []string{"*"}, Admin: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if id := s.Lookup("nope"); id != nil {
		t.Fatalf("unknown secret matched %s", id.Name)
	}
	p := s.Lookup("s1")
	if p == nil || p.Name != "payments" || !p.CanProduce("settlement.transfers") || p.CanProduce("ledger") || p.CanConsume("settlement.x") || p.Admin || !p.Producer() {
		t.Fatalf("payments: %+v", p)
	}
	a := s.Lookup("s2")
	if a == nil || !a.Admin || !a.CanConsume("anything") || a.CanProduce("anything") || a.Producer() || !a.Consumer() {
		t.Fatalf("audit: %+v", a)
	}
	if s, err := NewSet(nil); s != nil || err != nil {
		t.Fatalf("no tokens: %v %v", s, err)
	}
	for _, bad := range [][]Token{
		{{Name: "a", Token: ""}},
		{{Name: "a", Token: "x"}, {Name: "a", Token: "y"}},
		{{Name: "a", Token: "x"}, {Name: "b", Token: "x"}},
		{{Name: "a", Token: "x", Produce: []string{"["}}},
	} {
		if _, err := NewSet(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}
