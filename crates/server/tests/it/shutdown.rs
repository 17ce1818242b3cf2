//! SIGTERM under load: every request answered with a redirect has its row.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_answered_click() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, base) = spawn_serve(&data, &seed_catalog(), &[]).await;
    let client = client();

    // 16 workers click until the server goes away; each remembers the click
    // ids of the redirects it was answered with.
    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..16 {
        let c = client.clone();
        let base = base.clone();
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut n = 0u32;
            while Instant::now() < deadline {
                n += 1;
                let url = format!("{base}/go?id=amazon_kindle&src=w{w}&sub1={n}");
                let Ok(r) = c.get(url).header("user-agent", IPHONE).send().await else {
                    break;
                };
                if r.status().as_u16() == 302 {
                    let loc = location(&r);
                    let id = loc
                        .rsplit("ascsubtag=")
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    answered.lock().unwrap().push(id);
                }
            }
        }));
    }
    eventually(Duration::from_secs(20), "load to build up", || {
        let n = answered.lock().unwrap().len();
        async move { (n >= 300).then_some(()) }
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clickward exited with {exit}");
    for w in workers {
        w.await.unwrap();
    }

    let answered = answered.lock().unwrap().clone();
    let conn = rusqlite::Connection::open(data.join("clickward.db")).unwrap();
    let mut st = conn.prepare("SELECT click_id FROM clicks").unwrap();
    let stored: HashSet<String> = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|b| {
            let b: [u8; 16] = b.unwrap().try_into().unwrap();
            clickward_core::id::ClickId::from_bytes(b).to_string()
        })
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(answered.len() >= 300);
    assert!(
        missing.is_empty(),
        "{} of {} answered clicks are missing",
        missing.len(),
        answered.len()
    );
}
