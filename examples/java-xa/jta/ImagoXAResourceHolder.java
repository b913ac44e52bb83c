import bitronix.tm.resource.common.AbstractXAResourceHolder;
import bitronix.tm.resource.common.ResourceBean;
import bitronix.tm.resource.common.XAResourceHolder;
import io.imago.xa.ImagoXAResource;
import java.util.Date;
import java.util.List;
import javax.transaction.xa.XAResource;

/**
 * Bitronix's handle on one {@link ImagoXAResource}. Bitronix keeps the state of each
 * transaction's branch in the holder, keyed by xid, so one holder (and the one resource under
 * it) takes part in any number of concurrent transactions; the resource itself tells their
 * threads apart (its branch association).
 *
 * <p>There is no connection to pool or close: each call is an HTTP request, and the resource's
 * HttpClient keeps the connections.
 */
final class ImagoXAResourceHolder extends AbstractXAResourceHolder {
    private final ImagoXAResource resource;
    private final ResourceBean bean;

    ImagoXAResourceHolder(ImagoXAResource resource, ResourceBean bean) {
        this.resource = resource;
        this.bean = bean;
    }

    @Override
    public XAResource getXAResource() {
        return resource;
    }

    @Override
    public ResourceBean getResourceBean() {
        return bean;
    }

    @Override
    public List<XAResourceHolder> getXAResourceHolders() {
        return List.of(this);
    }

    @Override
    public Object getConnectionHandle() {
        return resource;
    }

    @Override
    public void close() {
        // nothing to close: the resource holds no connection of its own
    }

    @Override
    public Date getLastReleaseDate() {
        return null;
    }
}
