package cluster

import (
	"container/list"
	"log/slog"
	"sync"
	"time"
)

// logThrottle bounds the WARN lines of an event that strangers can repeat at will (a refused
// connection on the raft port): per key (the remote host) the first event is logged at once,
// the ones that follow within interval are only counted, and the first one after the interval
// is logged with the number suppressed since the line before it ("suppressed"). A port scanner
// or an old member redialling every few milliseconds so costs one line per interval, not one
// per attempt, and the first line of a new host still shows at once.
//
// The table of keys holds at most maxKeys entries, so a flood from many addresses does not grow
// memory: a new key takes the place of the key logged longest ago once that one's interval
// has passed (its suppressed count, if any, is never logged; a counter beside the throttle
// has every event). While every entry is still within its interval, new keys share one
// overflow entry, logged as any other with "hosts"="many": at most maxKeys+1 lines per interval
// whatever the number of addresses. Suppressed events of a key that falls silent are not
// logged either; the next event of the key reports them.
type logThrottle struct {
	log      *slog.Logger
	interval time.Duration
	maxKeys  int
	now      func() time.Time

	mu       sync.Mutex
	keys     map[string]*list.Element // of *throttled, in order of last logged, oldest first
	order    *list.List
	overflow throttled
}

type throttled struct {
	key        string
	logged     time.Time // when the key's last line was logged
	suppressed uint64    // events since then that were not logged
}

// throttleVerdict says what to do with one event.
type throttleVerdict struct {
	log        bool
	suppressed uint64 // events of the key not logged since its last line (when log)
	overflow   bool   // the key shares the overflow entry: too many keys at once
}

// Defaults of newLogThrottle.
const (
	defaultRefusalLogInterval = time.Minute
	defaultRefusalLogHosts    = 1024
)

// newLogThrottle logs to log at most once per interval per key, remembering at most maxKeys keys;
// now is the clock (time.Now outside tests).
func newLogThrottle(log *slog.Logger, interval time.Duration, maxKeys int, now func() time.Time) *logThrottle {
	return &logThrottle{log: log, interval: interval, maxKeys: maxKeys, now: now,
		keys: make(map[string]*list.Element), order: list.New()}
}

// allow counts one event of key and says whether to log it.
func (l *logThrottle) allow(key string) throttleVerdict {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.keys[key]; ok {
		e := el.Value.(*throttled)
		v := l.pass(e, now)
		if v.log {
			l.order.MoveToBack(el)
		}
		return v
	}
	if l.order.Len() >= l.maxKeys {
		oldest := l.order.Front()
		if oldest == nil || now.Sub(oldest.Value.(*throttled).logged) < l.interval {
			v := l.pass(&l.overflow, now)
			v.overflow = true
			return v
		}
		delete(l.keys, oldest.Value.(*throttled).key)
		l.order.Remove(oldest)
	}
	l.keys[key] = l.order.PushBack(&throttled{key: key, logged: now})
	return throttleVerdict{log: true}
}

// pass decides for an entry that exists: suppress within the interval, else log with the
// count of what was suppressed.
func (l *logThrottle) pass(e *throttled, now time.Time) throttleVerdict {
	if !e.logged.IsZero() && now.Sub(e.logged) < l.interval {
		e.suppressed++
		return throttleVerdict{}
	}
	v := throttleVerdict{log: true, suppressed: e.suppressed}
	e.logged, e.suppressed = now, 0
	return v
}

// warn logs msg with args at WARN unless key logged within the interval; a line after
// suppressed events carries their number ("suppressed").
func (l *logThrottle) warn(key, msg string, args ...any) {
	v := l.allow(key)
	if !v.log {
		return
	}
	if v.suppressed > 0 {
		args = append(args, "suppressed", v.suppressed)
	}
	if v.overflow {
		args = append(args, "hosts", "many")
	}
	l.log.Warn(msg, args...)
}

// len is the number of keys remembered (the overflow entry aside).
func (l *logThrottle) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}
