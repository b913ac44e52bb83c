import bitronix.tm.journal.DiskJournal;
import bitronix.tm.journal.Journal;
import bitronix.tm.journal.TransactionLogRecord;
import bitronix.tm.utils.Uid;
import java.io.IOException;
import java.util.Map;
import java.util.Set;
import javax.transaction.Status;

/**
 * Test instrumentation, not application code: Bitronix's disk journal, except that once
 * {@link #arm armed} it halts the JVM (Runtime.halt: no shutdown hooks, no finally blocks, no
 * further request to any resource) right after the journal has written and forced a COMMITTING
 * record — the manager's commit decision is durable, and no resource has been told yet. Bitronix
 * loads it by class name ({@code Configuration.setJournal}).
 */
public final class HaltingJournal implements Journal {
    /** The exit status of a halted JVM. */
    static final int HALT_STATUS = 77;

    private static volatile boolean armed;

    private final DiskJournal disk = new DiskJournal();

    /** Halts the JVM at the next commit decision. */
    static void arm() {
        armed = true;
    }

    @Override
    public void log(int status, Uid gtrid, Set<String> uniqueNames) throws IOException {
        disk.log(status, gtrid, uniqueNames);
        if (armed && status == Status.STATUS_COMMITTING) {
            disk.force();
            System.out.println("HALT after the commit decision of " + gtrid + " for " + uniqueNames);
            System.out.flush();
            Runtime.getRuntime().halt(HALT_STATUS);
        }
    }

    @Override
    public void open() throws IOException {
        disk.open();
    }

    @Override
    public void close() throws IOException {
        disk.close();
    }

    @Override
    public void force() throws IOException {
        disk.force();
    }

    @Override
    public Map<Uid, TransactionLogRecord> collectDanglingRecords() throws IOException {
        return disk.collectDanglingRecords();
    }

    @Override
    public void shutdown() {
        disk.shutdown();
    }
}
