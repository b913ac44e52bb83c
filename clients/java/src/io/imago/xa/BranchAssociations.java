package io.imago.xa;

import java.util.concurrent.ConcurrentHashMap;
import javax.transaction.xa.Xid;

/**
 * Which branch each thread of control is associated with, on one {@link ImagoXAResource}: the
 * X/Open association that {@code start} opens and {@code end} closes, and that
 * {@code publish} without an xid follows.
 *
 * <p>Keyed by the Thread object rather than a ThreadLocal so that an {@code end},
 * {@code commit} or {@code rollback} called from another thread (a manager's timeout reaper,
 * a recovery thread) can clear the association of whichever thread holds the branch; a
 * ThreadLocal would leave that thread pointing at a finished branch. The broker keeps one
 * state per branch (active, idle, suspended), so at most one thread holds a given branch.
 */
final class BranchAssociations {
    private final ConcurrentHashMap<Thread, ImagoXid> byThread = new ConcurrentHashMap<>();

    /** The branch the calling thread is associated with, or null. */
    ImagoXid current() {
        return byThread.get(Thread.currentThread());
    }

    /** Associates the calling thread with xid. */
    void associate(Xid xid) {
        byThread.put(Thread.currentThread(), ImagoXid.copyOf(xid));
    }

    /** Ends every thread's association with xid (at most one thread holds it). */
    void end(Xid xid) {
        byThread.values().removeIf(x -> ImagoXid.same(x, xid));
    }
}
