//! The one-database rule: async code reaches SQLite only through the blocking pool, so a
//! long hold on the shared connection (what a rollout pass or a model registration does)
//! stalls no async worker. Before the rule, eight API requests waiting for the lock took
//! the runtime's worker thread and every other request waited with them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use common::harness::{bridge, embedded};
use common::http;
use outpost_bridge::auth::{Role, add_token};

// One worker thread: a lock taken on it stalls every task, the HTTP server's included.
#[tokio::test(flavor = "current_thread")]
async fn a_held_database_stalls_no_async_worker() {
    let dir = tempfile::tempdir().unwrap();
    let b = bridge(dir.path(), embedded(true)).await;
    let api = b.http_addr.unwrap();
    let token = add_token(&b.db.lock(), "ops", Role::Viewer).unwrap();

    let db = b.db.clone();
    let released = Arc::new(AtomicBool::new(false));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = {
        let released = released.clone();
        std::thread::spawn(move || {
            let g = db.lock();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            released.store(true, SeqCst);
            drop(g);
        })
    };
    held_rx.recv().unwrap();
    let auth = vec![("Authorization", format!("Bearer {token}"))];
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { http::request(api, "GET", "/v1/devices", &auth, b"").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = http::get(api, "/v1/health").await;
    assert_eq!(r.status, 200);
    assert!(
        !released.load(SeqCst),
        "GET /v1/health waited for the database to be released"
    );
    // The MQTT task too: the bridge's own connection stays up and routing.
    assert!(*b.connected.borrow());

    holder.join().unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap().status, 200, "waited, then answered");
    }
    b.shutdown().await;
}
