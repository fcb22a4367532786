//! The chat proxy against the fake LLM on 127.0.0.1:0.

use anectx_server::{Interaction, InteractionKind};
use anectx_testing::fake_llm;
use serde_json::json;

use crate::common::*;

async fn recorded(h: &Harness) -> Interaction {
    let mut r = recorded_by(h, "the chat request").await;
    assert_eq!(r.len(), 1, "one interaction per request");
    r.pop().unwrap()
}

async fn proxied() -> (Harness, fake_llm::FakeLlmLog) {
    let (addr, log) = fake_llm::spawn().await.unwrap();
    let h = harness(Opts {
        llm: Some(format!("http://{addr}/v1")),
        ..Opts::default()
    })
    .await;
    (h, log)
}

#[tokio::test]
async fn non_streaming_injects_context_returns_the_upstream_answer_and_records() {
    let (h, log) = proxied().await;
    let body = json!({
        "model": "some-llm",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "what is the capital of france ?"},
        ],
        "anectx": {"budget_tokens": 100},
    });
    let r = post(&h.app, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let answer = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // The upstream saw our system message with markers [1..n], after the client's.
    let seen = log.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert!(up.get("anectx").is_none(), "anectx options are stripped");
    assert_eq!(up["model"], "some-llm");
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5);
    assert_eq!(msgs[0]["content"], "be brief");
    assert_eq!(msgs[1]["role"], "system");
    let sys = msgs[1]["content"].as_str().unwrap();
    assert!(sys.contains("Cite every source"), "{sys}");
    // The model is random, so the order is arbitrary; every passage fits the budget.
    assert!(
        sys.contains("] (geo.md)\nparis is the capital of france ."),
        "{sys}"
    );
    assert!(sys.contains("\n[1] ("), "{sys}");
    assert_eq!(msgs[4]["content"], "what is the capital of france ?");
    // The body is the upstream's, unchanged.
    assert_eq!(answer, fake_llm::answer_for(up));
    assert!(answer.starts_with("I saw sources [1]"), "{answer}");
    assert_eq!(v["id"], "fake-1");
    let n = fake_llm::markers_in_system(up).len();
    assert_eq!(
        r.headers["x-anectx-context"],
        format!("{n} chunks").as_str()
    );
    let i = recorded(&h).await;
    assert_eq!(i.kind, InteractionKind::Chat);
    assert_eq!(i.query, "what is the capital of france ?");
    assert_eq!(i.chunks.len(), n);
    assert!(i.chunks.iter().any(|c| c.source == "geo.md"));
    assert_eq!(i.chunks[0].marker, 1);
    assert_eq!(i.response.as_deref(), Some(answer.as_str()));
    assert!(i.complete && !i.streamed);
    assert_eq!(i.upstream_status, Some(200));
    assert_eq!(i.model.as_deref(), Some("some-llm"));
}

#[tokio::test]
async fn streaming_passes_sse_through_and_records_the_concatenated_deltas() {
    let (h, log) = proxied().await;
    let body = json!({
        "model": "some-llm",
        "stream": true,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "the cat sat where ?"}]}],
    });
    let r = post(&h.app, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let mut got = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data: ") {
            if d != "[DONE]" {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                got.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            }
        }
    }
    let up = &log.requests()[0];
    assert_eq!(up["messages"][0]["role"], "system");
    assert_eq!(got, fake_llm::answer_for(up));
    let i = recorded(&h).await;
    assert!(i.streamed && i.complete);
    assert_eq!(i.response.as_deref(), Some(got.as_str()));
    assert_eq!(i.query, "the cat sat where ?");
}

#[tokio::test]
async fn context_can_be_disabled_per_request() {
    let (h, log) = proxied().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "paris"}], "anectx": {"context": false}});
    let r = post(&h.app, "/v1/chat/completions", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "I saw no sources."
    );
    assert_eq!(log.requests()[0]["messages"].as_array().unwrap().len(), 1);
    assert_eq!(r.headers["x-anectx-context"], "disabled");
    assert!(recorded(&h).await.chunks.is_empty());
}

#[tokio::test]
async fn upstream_errors_come_back_unchanged_and_a_dead_upstream_is_502() {
    let (h, _log) = proxied().await;
    // The fake LLM rejects a body without messages as axum does: 422 text.
    let r = post(
        &h.app,
        "/v1/chat/completions",
        json!({"model": "m", "messages": "x"}),
    )
    .await;
    assert_eq!(r.status, 422, "we validate `messages` ourselves");
    assert!(r.error_message().contains("`messages` must be a list"));

    // Nothing listens on a port we just released.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let h2 = harness(Opts {
        llm: Some(format!("http://{dead}/v1")),
        ..Opts::default()
    })
    .await;
    let r = post(
        &h2.app,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["type"], "upstream_error");
    assert!(r.error_message().contains("could not reach the LLM"));
}

#[tokio::test]
async fn without_llm_the_proxy_is_503() {
    let h = harness(Opts::default()).await;
    let r = post(
        &h.app,
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.error_message().contains("--llm"));
}

/// An upstream that accepts the connection and never answers gets 504 with
/// the OpenAI error shape after the first-byte timeout, instead of hanging.
#[tokio::test]
async fn a_hung_upstream_is_a_504_after_the_first_byte_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold connections, never writing a byte.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let h = harness(Opts {
        llm: Some(format!("http://{addr}/v1")),
        llm_timeout: std::time::Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    let r = tokio::time::timeout(
        WAIT,
        post(
            &h.app,
            "/v1/chat/completions",
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hello?"}]}),
        ),
    )
    .await
    .expect("the chat request still hangs on an upstream that never answers");
    assert_eq!(r.status, 504, "{}", r.error_message());
    assert_eq!(r.json()["error"]["type"], "timeout_error");
    assert!(
        r.error_message().contains("sent no answer"),
        "{}",
        r.error_message()
    );
    holder.abort();
}
