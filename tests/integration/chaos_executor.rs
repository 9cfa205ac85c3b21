//! kill -9 of an executor in the middle of a call: the run is neither lost nor recorded twice;
//! the call is repeated (delivery is at least once) with the same `webhook-id` and
//! `X-CronBox-Run-Id`, and not before the first executor's lease on the attempt has ended, so
//! two executors never call for one attempt at the same time.

use crate::common;

use std::time::Duration;

use common::TestEnv;
use serde_json::json;

#[tokio::test]
async fn an_executor_killed_mid_call_is_replaced_and_the_call_repeats_with_the_same_ids() {
    let mut env = TestEnv::start().await;
    env.stop_server().await;
    let _api = env.spawn_role("api", &[]);
    let _dispatcher = env.spawn_role("dispatcher", &[]);
    let mut first = env.spawn_role("executor", &[]);
    env.wait_ready().await;

    // The target takes 3 s to answer; the request timeout is 5 s.
    let (s, v) = env
        .post(
            "/delayed",
            json!({"url": env.target_url("/slow/3000/victim"), "delay_seconds": 0, "timeout_seconds": 5}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    env.eventually(Duration::from_secs(20), "the call to arrive", || async {
        (!env.target.arrivals_at("/slow/3000/victim").is_empty()).then_some(())
    })
    .await;
    first.start_kill().expect("kill -9 the executor");
    let _ = first.wait().await;
    let _second = env.spawn_role("executor", &[]);

    // Redelivered after ack_wait (6 s here), held until the lease ends (5 s timeout + 15 s).
    let run = env.wait_execution(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let arrivals = env.target.arrivals_at("/slow/3000/victim");
    assert_eq!(arrivals.len(), 2, "called once by each executor");
    for a in &arrivals {
        assert_eq!(a.run_id.as_deref(), Some(run_id.as_str()));
        assert_eq!(
            a.headers.get("webhook-id").and_then(|v| v.to_str().ok()),
            Some(run_id.as_str())
        );
    }
    let gap = arrivals[1].at - arrivals[0].at;
    assert!(
        gap >= chrono::Duration::seconds(19),
        "the repeat waited for the lease: {gap}"
    );

    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Run' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&run_id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("RunScheduled"), 1, "{types:?}");
    assert_eq!(count("AttemptStarted"), 2, "the repeat is in the log: {types:?}");
    assert_eq!(count("AttemptFinished"), 1, "{types:?}");
    assert_eq!(count("RunSucceeded"), 1, "{types:?}");
}
