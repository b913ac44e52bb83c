package io.imago.xa;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HexFormat;
import javax.transaction.xa.Xid;

/**
 * An immutable {@link Xid}: a format id and the global transaction id and branch qualifier
 * (1 to 64 bytes each). Two Xids are equal when all three parts are, whatever their classes:
 * {@link #same} compares any two Xid implementations that way.
 */
public final class ImagoXid implements Xid {
    /** The X/Open limit on the gtrid and the bqual, in bytes. */
    public static final int MAX_PART = Xid.MAXGTRIDSIZE;

    private final int formatId;
    private final byte[] gtrid;
    private final byte[] bqual;

    public ImagoXid(int formatId, byte[] gtrid, byte[] bqual) {
        if (gtrid == null || gtrid.length < 1 || gtrid.length > MAX_PART) {
            throw new IllegalArgumentException("gtrid must be 1 to " + MAX_PART + " bytes");
        }
        if (bqual == null || bqual.length < 1 || bqual.length > MAX_PART) {
            throw new IllegalArgumentException("bqual must be 1 to " + MAX_PART + " bytes");
        }
        this.formatId = formatId;
        this.gtrid = gtrid.clone();
        this.bqual = bqual.clone();
    }

    /** An Xid whose gtrid and bqual are the UTF-8 bytes of the given strings. */
    public static ImagoXid of(int formatId, String gtrid, String bqual) {
        return new ImagoXid(formatId, gtrid.getBytes(StandardCharsets.UTF_8), bqual.getBytes(StandardCharsets.UTF_8));
    }

    /** A copy of any Xid. */
    public static ImagoXid copyOf(Xid x) {
        return x instanceof ImagoXid ? (ImagoXid) x
                : new ImagoXid(x.getFormatId(), x.getGlobalTransactionId(), x.getBranchQualifier());
    }

    @Override
    public int getFormatId() {
        return formatId;
    }

    @Override
    public byte[] getGlobalTransactionId() {
        return gtrid.clone();
    }

    @Override
    public byte[] getBranchQualifier() {
        return bqual.clone();
    }

    /** Whether two Xids (of any implementation) name the same branch. */
    public static boolean same(Xid a, Xid b) {
        return a.getFormatId() == b.getFormatId()
                && Arrays.equals(a.getGlobalTransactionId(), b.getGlobalTransactionId())
                && Arrays.equals(a.getBranchQualifier(), b.getBranchQualifier());
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Xid && same(this, (Xid) o);
    }

    @Override
    public int hashCode() {
        return 31 * (31 * formatId + Arrays.hashCode(gtrid)) + Arrays.hashCode(bqual);
    }

    /** The broker's txkey form: XID:&lt;format_id&gt;:&lt;gtrid hex&gt;:&lt;bqual hex&gt;. */
    @Override
    public String toString() {
        HexFormat h = HexFormat.of();
        return "XID:" + formatId + ":" + h.formatHex(gtrid) + ":" + h.formatHex(bqual);
    }
}
