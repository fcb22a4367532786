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

/// A raw HTTP upstream on loopback: reads each request (headers and a
/// `Content-Length` body), then lets `answer` write whatever it likes on the
/// socket; the connection closes when `answer` returns.
async fn raw_upstream<F, Fut>(answer: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
                answer(sock).await;
            });
        }
    });
    (addr, task)
}

async fn chat_through(
    addr: std::net::SocketAddr,
    tweak: fn(&mut anectx_server::LlmConfig),
    stream: bool,
) -> Reply {
    let h = harness(Opts {
        llm: Some(format!("http://{addr}/v1")),
        llm_tweak: Some(tweak),
        ..Opts::default()
    })
    .await;
    tokio::time::timeout(
        WAIT,
        post(
            &h.app,
            "/v1/chat/completions",
            json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    )
    .await
    .expect("the chat answer never ended")
}

/// The error event a cut stream ends with, parsed.
fn last_error_event(r: &Reply) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(&r.body);
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let v: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ")?).ok()?;
    v.get("error").is_some().then_some(v)
}

/// A non-streamed answer larger than the body cap (no `Content-Length`,
/// sent until the connection closes) is a 502 in the OpenAI error shape.
#[tokio::test]
async fn a_non_streamed_answer_over_the_body_cap_is_a_502() {
    use tokio::io::AsyncWriteExt;
    let (addr, up) = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"x\": \"")
            .await;
        let block = vec![b'a'; 16 * 1024];
        // 1 MiB in all, against a 64 KiB cap.
        for _ in 0..64 {
            if s.write_all(&block).await.is_err() {
                return;
            }
        }
        let _ = s.write_all(b"\"}").await;
    })
    .await;
    let r = chat_through(addr, |l| l.max_body_bytes = 64 * 1024, false).await;
    assert_eq!(
        r.status,
        502,
        "{} bytes: {}…",
        r.body.len(),
        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
    );
    assert_eq!(r.json()["error"]["type"], "upstream_error");
    assert!(
        r.error_message().contains("larger than 65536 bytes"),
        "{}",
        r.error_message()
    );
    up.abort();
}

/// A stream whose one line never ends is cut at the line cap: what came
/// before is passed through, then an error event ends the stream.
#[tokio::test]
async fn a_streamed_line_over_the_cap_ends_the_stream_with_an_error_event() {
    use tokio::io::AsyncWriteExt;
    let (addr, up) = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\ndata: ")
            .await;
        // 1 MiB without a newline, against a 16 KiB line cap.
        let block = vec![b'x'; 16 * 1024];
        for _ in 0..64 {
            if s.write_all(&block).await.is_err() {
                return;
            }
        }
    })
    .await;
    let r = chat_through(addr, |l| l.max_sse_line_bytes = 16 * 1024, true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"data: {\"choices\""));
    let e = last_error_event(&r).unwrap_or_else(|| {
        panic!(
            "no error event at the end of {} bytes: {:?}",
            r.body.len(),
            String::from_utf8_lossy(&r.body[r.body.len().saturating_sub(200)..])
        )
    });
    assert_eq!(e["error"]["type"], "upstream_error");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("a line longer than 16384 bytes"), "{m}");
    assert!(r.body.len() < 64 * 1024, "{} bytes passed", r.body.len());
    up.abort();
}

/// Short lines that add up past the total cap are cut too.
#[tokio::test]
async fn a_stream_over_the_total_cap_ends_with_an_error_event() {
    use tokio::io::AsyncWriteExt;
    let (addr, up) = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
            )
            .await;
        let event = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"la \"}}]}\n\n";
        let block: Vec<u8> = event
            .iter()
            .copied()
            .cycle()
            .take(event.len() * 200)
            .collect();
        // About 1.2 MiB of events, against a 64 KiB cap.
        for _ in 0..100 {
            if s.write_all(&block).await.is_err() {
                return;
            }
        }
        let _ = s.write_all(b"data: [DONE]\n\n").await;
    })
    .await;
    let r = chat_through(addr, |l| l.max_stream_bytes = 64 * 1024, true).await;
    assert_eq!(r.status, 200);
    let e = last_error_event(&r).expect("no error event at the end of the stream");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("more than 65536 bytes"), "{m}");
    assert!(r.body.len() < 128 * 1024, "{} bytes passed", r.body.len());
    up.abort();
}

/// A stream that goes silent is ended by the idle timeout instead of
/// holding the client (and the shutdown) forever.
#[tokio::test]
async fn a_silent_stream_ends_with_an_error_event_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let (addr, up) = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n")
            .await;
        // Then nothing, with the connection held open.
        std::future::pending::<()>().await;
        drop(s);
    })
    .await;
    let r = chat_through(
        addr,
        |l| l.idle_timeout = std::time::Duration::from_millis(300),
        true,
    )
    .await;
    assert_eq!(r.status, 200);
    let e = last_error_event(&r).expect("no error event at the end of the stream");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("--llm-idle-secs"), "{m}");
    up.abort();
}
