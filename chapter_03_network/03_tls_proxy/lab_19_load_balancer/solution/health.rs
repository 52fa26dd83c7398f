//! Active health checks: one task per upstream probes it every interval.
//!
//! One task per upstream, not one task probing them all in turn: a probe
//! that hangs until its timeout must not delay the verdict on the others.
//! Within one task the probes are sequential, and each is bounded by the
//! interval itself, so an upstream never has more than one probe
//! outstanding and a verdict is never older than about two intervals.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Request, Uri};
use tokio::time::{MissedTickBehavior, interval, timeout};

use crate::proxy::{HttpClient, empty};
use crate::upstreams::Upstream;

/// Probes `upstream` with `GET <path>` every `every`, forever, and records
/// each verdict: a 2xx answer is healthy, anything else is not.
pub async fn run(upstream: Arc<Upstream>, client: HttpClient, every: Duration, path: String) {
    let uri: Uri = match format!("http://{}{path}", upstream.authority).parse() {
        Ok(uri) => uri,
        Err(e) => {
            eprintln!("health {}: bad probe URI: {e}", upstream.authority);
            return;
        }
    };
    let mut ticker = interval(every);
    // After a slow probe, wait a whole interval again rather than firing
    // the missed ticks in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: the first round of probes goes
        // out at startup.
        ticker.tick().await;
        let verdict = probe(&client, &uri, every).await;
        let was = upstream.set_healthy(verdict.is_ok());
        // Log transitions only: one line per change, not one per probe.
        match (&verdict, was) {
            (Ok(()), false) => eprintln!("health {}: healthy again", upstream.authority),
            (Err(why), true) => eprintln!("health {}: unhealthy: {why}", upstream.authority),
            _ => {}
        }
    }
}

/// One probe: `Ok` for a 2xx answer within `limit`, else why not.
async fn probe(client: &HttpClient, uri: &Uri, limit: Duration) -> Result<(), String> {
    let request = Request::get(uri.clone())
        .body(empty())
        .expect("a GET with a valid URI builds");
    let answer = timeout(limit, async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the (small) body to its end, so that the connection goes
        // back to the pool for the next probe instead of being closed.
        let _ = response.into_body().collect().await;
        Ok::<_, String>(status)
    })
    .await;
    match answer {
        Err(_) => Err(format!("no answer within {limit:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
    }
}
