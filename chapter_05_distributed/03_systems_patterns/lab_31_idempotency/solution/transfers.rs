//! `POST /transfers`: a money transfer that runs once per idempotency key.
//!
//! One transaction does everything, in this order:
//!
//! 1. forget the key if it expired (`DELETE ... WHERE created_at <= now() - ttl`);
//! 2. claim the key: `INSERT ... ON CONFLICT (key) DO NOTHING`. One row
//!    inserted means this request owns the key. If another transaction holds
//!    an uncommitted row for the key, PostgreSQL makes this `INSERT` wait
//!    until that transaction ends, which is what makes concurrent
//!    duplicates, on any number of server processes, run one at a time;
//! 3. if the key was already there: compare the body's hash and replay the
//!    stored response (or 422), and roll back (nothing was written);
//! 4. otherwise: lock both accounts, move the money, record the transfer,
//!    store the response in the key's row, and commit it all at once.
//!
//! The alternative many first designs use, "look the key up, and if it is
//! absent do the transfer", has a window between the look-up and the
//! transfer in which a duplicate sees the key absent too: both transfer.
//! The check must be the same statement that takes the key.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Postgres, Transaction};

use crate::{App, error, internal};

/// The longest key accepted, in bytes.
const MAX_KEY_LEN: usize = 255;

/// The body of `POST /transfers`.
#[derive(Deserialize)]
struct TransferRequest {
    from: i64,
    to: i64,
    amount: i64,
}

/// `POST /transfers` with `Idempotency-Key` and `{"from", "to", "amount"}`.
///
/// Requests rejected here (400) never touch the database, so they do not
/// use up their key: the client can fix the body and send it again.
pub async fn create_transfer(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        Some(Ok(k)) if !k.is_empty() && k.len() <= MAX_KEY_LEN => k.to_string(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "an Idempotency-Key header of 1 to 255 characters is required",
            );
        }
    };
    let req = match serde_json::from_slice::<TransferRequest>(&body) {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"from\": <id>, \"to\": <id>, \"amount\": <integer>}",
            );
        }
    };
    if req.amount <= 0 {
        return error(StatusCode::BAD_REQUEST, "the amount must be above 0");
    }
    if req.from == req.to {
        return error(StatusCode::BAD_REQUEST, "from and to must differ");
    }
    match once(&app, &key, &body, &req).await {
        Ok(response) => response,
        // The transaction was dropped on the way out, so it rolled back:
        // no transfer, and the key is free for the client's retry.
        Err(e) => internal(e),
    }
}

/// Runs the transfer at most once for `key`; see the module docs.
async fn once(
    app: &App,
    key: &str,
    body: &[u8],
    req: &TransferRequest,
) -> Result<Response, sqlx::Error> {
    let mut tx = app.pool.begin().await?;

    // An expired key is forgotten, here rather than by a sweeper, so that
    // expiry is exact whenever a sweeper last ran. `now()` is the
    // database's clock: every server process agrees on it.
    sqlx::query(
        "DELETE FROM idempotency_keys \
         WHERE key = $1 AND created_at <= now() - $2 * interval '1 second'",
    )
    .bind(key)
    .bind(app.ttl_secs)
    .execute(&mut *tx)
    .await?;

    // The claim. This statement waits while another transaction holds an
    // uncommitted row for the key, and its result is decided only when
    // that transaction ends.
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash) VALUES ($1, sha256($2)) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(body)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;

    if !claimed {
        // A new statement, so a new snapshot (READ COMMITTED): it sees the
        // row the other transaction committed while the INSERT waited.
        let stored: Option<(bool, Option<i16>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT request_hash = sha256($2), status, response \
             FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .bind(body)
        .fetch_optional(&mut *tx)
        .await?;
        tx.rollback().await?;
        return Ok(match stored {
            Some((false, _, _)) => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used with a different request body",
            ),
            Some((true, Some(status), Some(response))) => respond(status, response, true),
            // The row committed without a response, or vanished between
            // the two statements: neither happens with this design, but a
            // client can always retry a 409.
            _ => error(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is in progress",
            ),
        });
    }

    let (status, response) = transfer(&mut tx, req).await?;
    // The response is stored whatever it says: a 402 or a 404 is the
    // answer to this request too, and a retry must get it again rather
    // than a transfer that succeeds because the balance changed since.
    sqlx::query("UPDATE idempotency_keys SET status = $2, response = $3 WHERE key = $1")
        .bind(key)
        .bind(status)
        .bind(&response)
        .execute(&mut *tx)
        .await?;
    // The key, the transfer and the response become visible together.
    tx.commit().await?;
    Ok(respond(status, response, false))
}

/// Moves the money inside `tx`; returns the status and JSON body to send
/// (and to store with the key).
async fn transfer(
    tx: &mut Transaction<'static, Postgres>,
    req: &TransferRequest,
) -> Result<(i16, Vec<u8>), sqlx::Error> {
    // Both rows locked, in id order: a concurrent transfer touching either
    // account waits here, and two opposite transfers cannot deadlock.
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, balance FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind([req.from, req.to].as_slice())
    .fetch_all(&mut **tx)
    .await?;
    if rows.len() < 2 {
        return Ok(outcome(404, json!({"error": "no such account"})));
    }
    let from_balance = rows
        .iter()
        .find(|(id, _)| *id == req.from)
        .map(|(_, b)| *b)
        .unwrap_or(0);
    if from_balance < req.amount {
        return Ok(outcome(402, json!({"error": "insufficient funds"})));
    }
    // Relative updates under the row locks: the balance read above is the
    // one being changed.
    sqlx::query("UPDATE accounts SET balance = balance - $2 WHERE id = $1")
        .bind(req.from)
        .bind(req.amount)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
        .bind(req.to)
        .bind(req.amount)
        .execute(&mut **tx)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO transfers (from_id, to_id, amount) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(req.from)
    .bind(req.to)
    .bind(req.amount)
    .fetch_one(&mut **tx)
    .await?;
    Ok(outcome(
        201,
        json!({"id": id, "from": req.from, "to": req.to, "amount": req.amount}),
    ))
}

fn outcome(status: i16, body: serde_json::Value) -> (i16, Vec<u8>) {
    (status, body.to_string().into_bytes())
}

/// A response from a status and a JSON body, marked as a replay or not.
fn respond(status: i16, body: Vec<u8>, replayed: bool) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
