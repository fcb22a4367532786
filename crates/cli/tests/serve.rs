//! `anectx serve` as a real process on an ephemeral loopback port, used by
//! the real `openai` Python client (embeddings; chat through the proxy to a
//! fake LLM started here on 127.0.0.1:0) and by plain HTTP (rerank).

mod common;

use std::io::{BufReader, Read};
use std::process::{Command, Stdio};

use common::{anectx, start_server, Server};

use anectx_core::Backend;
use serde_json::{json, Value};

const CLIENT: &str = r#"
import json, sys
import openai
base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
c = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
out = {}
texts = ["The cat sat on the mat.", "Paris is the capital of France."]
e = c.embeddings.create(model=model, input=texts)  # the client asks for base64
out["emb_default"] = [list(d.embedding) for d in e.data]
out["usage"] = e.usage.prompt_tokens
e2 = c.embeddings.create(model=model, input=texts[1], encoding_format="float")
out["emb_float"] = list(e2.data[0].embedding)
msgs = [{"role": "user", "content": "What is the capital of France?"}]
r = c.chat.completions.create(model="fake-llm", messages=msgs)
out["chat"] = r.choices[0].message.content
s = c.chat.completions.create(model="fake-llm", messages=msgs, stream=True)
out["stream"] = "".join((ch.choices[0].delta.content or "") for ch in s if ch.choices)
try:
    openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).embeddings.create(model=model, input="x")
    out["wrong_key"] = None
except openai.AuthenticationError as ex:
    out["wrong_key"] = ex.status_code
# Frameworks send a fixed name; the served model answers and is named.
e3 = c.embeddings.create(model="text-embedding-3-small", input="x")
out["framework_model"] = [e3.model, len(e3.data[0].embedding)]
print(json.dumps(out))
"#;

/// Starts `anectx serve` (already given its arguments) with stderr piped;
/// returns the server, `host:port` and its stderr.
fn start(cmd: &mut Command) -> (Server, String, std::process::ChildStderr) {
    let (mut server, addr) = start_server(cmd.stderr(Stdio::piped()));
    let stderr = server.0.stderr.take().unwrap();
    (server, addr, stderr)
}

/// One plain HTTP/1.1 request; returns (status, JSON body).
fn http(addr: &str, method: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let (status, payload) = anectx_testing::http(addr, method, path, Some(key), &body.to_string());
    (
        status,
        serde_json::from_str(&payload).unwrap_or(Value::Null),
    )
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn openai_client_embeds_and_chats_through_the_proxy_and_rerank_works() {
    let Some(model) = anectx_testing::minilm_dir() else {
        return;
    };
    let Some(python) = anectx_testing::python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A small store indexed with the same model.
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("france.md"),
        "# France\n\nParis is the capital of France. It lies on the Seine.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("cats.md"),
        "# Cats\n\nThe cat sat on the mat and purred all afternoon.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("water.md"),
        "# Water\n\nWater boils at 100 degrees Celsius at sea level.\n",
    )
    .unwrap();
    let out = anectx(dir)
        .arg("index")
        .arg(&docs)
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The fake upstream LLM.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (llm, log) = rt.block_on(anectx_testing::fake_llm::spawn()).unwrap();

    let mut child = anectx(dir);
    child
        .arg("serve")
        .arg("--model")
        .arg(&model)
        .arg("--store")
        .arg(dir.join("store"))
        .args([
            "--port",
            "0",
            "--api-key",
            "test-key",
            "--model-id",
            "minilm",
        ])
        .arg("--llm")
        .arg(format!("http://{llm}/v1"));
    let (server, addr, stderr) = start(&mut child);

    // The real openai client.
    let out = Command::new(&python)
        .arg("-c")
        .arg(CLIENT)
        .arg(format!("http://{addr}/v1"))
        .arg("test-key")
        .arg("minilm")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Embeddings equal the model's own, in both encodings.
    let (emb, tok) = anectx_models::load_embedder(&model, anectx_models::WeightDtype::F32).unwrap();
    let texts = ["The cat sat on the mat.", "Paris is the capital of France."];
    let direct = anectx_models::CandleBackend::new(Some(emb), None)
        .embed(&tok.encode_batch(&texts).unwrap())
        .unwrap();
    let rows = v["emb_default"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (i, r) in rows.iter().enumerate() {
        let e = floats(r);
        assert_eq!(e.len(), 384);
        assert!(cos(&e, direct.row(i)) > 0.9999, "row {i}");
    }
    assert!(cos(&floats(&v["emb_float"]), direct.row(1)) > 0.9999);
    assert!(v["usage"].as_u64().unwrap() > 10);

    // Chat: the fake LLM saw our injected sources and its answer came back unchanged.
    let seen = log.requests();
    assert_eq!(seen.len(), 2, "one non-streaming and one streaming request");
    let expected = anectx_testing::fake_llm::answer_for(&seen[0]);
    assert!(expected.starts_with("I saw sources [1]"), "{expected}");
    assert_eq!(v["chat"], expected.as_str());
    assert_eq!(
        v["stream"],
        anectx_testing::fake_llm::answer_for(&seen[1]).as_str()
    );
    let sys = seen[0]["messages"][0]["content"].as_str().unwrap();
    assert!(sys.contains("france.md"), "{sys}");

    // Auth through the client's own error type; a framework's fixed model
    // name is answered by the served model, which the response names.
    assert_eq!(v["wrong_key"], 401);
    assert_eq!(v["framework_model"], json!(["minilm", 384]));

    // Rerank over plain HTTP.
    let (status, r) = http(
        &addr,
        "POST",
        "/v1/rerank",
        "test-key",
        &json!({
            "query": "What is the capital of France?",
            "documents": ["The cat sat on the mat.", "Paris is the capital of France.", "Water boils at 100 degrees."],
            "top_n": 2,
            "return_documents": true,
        }),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    assert_eq!(r["results"][0]["index"], 1);
    assert_eq!(
        r["results"][0]["document"]["text"],
        "Paris is the capital of France."
    );
    assert_eq!(r["meta"]["scoring"], "embedding_cosine");
    let (status, _) = http(&addr, "POST", "/v1/rerank", "wrong", &json!({}));
    assert_eq!(status, 401);

    // SIGTERM: a graceful stop with exit status 0.
    let mut server = server;
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.0.wait().unwrap();
    let mut err = String::new();
    BufReader::new(stderr).read_to_string(&mut err).unwrap();
    assert!(status.success(), "exit {status:?}; stderr:\n{err}");
    assert!(err.contains("anectx: stopped"), "{err}");
}

#[test]
fn a_public_bind_without_an_api_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = anectx(tmp.path())
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an API key"),
        "{err}"
    );
    assert!(err.contains("--api-key"), "{err}");
}

/// TEI- and Ollama-shaped requests over plain HTTP against a real server
/// (the `ollama` and TEI Python clients are not installed here; the
/// shapes are checked field by field).
#[test]
fn tei_and_ollama_shaped_requests_over_loopback() {
    let Some(model) = anectx_testing::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cmd = anectx(dir);
    cmd.arg("serve").arg("--model").arg(&model).args([
        "--port",
        "0",
        "--api-key",
        "k",
        "--model-id",
        "minilm",
    ]);
    let (_server, addr, _stderr) = start(&mut cmd);
    let texts = ["The cat sat on the mat.", "Paris is the capital of France."];
    let (emb, tok) = anectx_models::load_embedder(&model, anectx_models::WeightDtype::F32).unwrap();
    let direct = anectx_models::CandleBackend::new(Some(emb), None)
        .embed(&tok.encode_batch(&texts).unwrap())
        .unwrap();

    // TEI /embed: [[f32]], the model's own vectors.
    let (status, v) = http(&addr, "POST", "/embed", "k", &json!({"inputs": texts}));
    assert_eq!(status, 200, "{v}");
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (i, r) in rows.iter().enumerate() {
        let e = floats(r);
        assert_eq!(e.len(), 384);
        assert!(cos(&e, direct.row(i)) > 0.9999, "row {i}");
    }
    // Too long without `truncate`: 413, TEI's error shape.
    let long = vec!["word"; 600].join(" ");
    let (status, v) = http(&addr, "POST", "/embed", "k", &json!({"inputs": long}));
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error_type"], "Validation", "{v}");
    assert!(v["error"].as_str().unwrap().contains("512"), "{v}");
    let (status, v) = http(&addr, "POST", "/embed", "wrong", &json!({"inputs": "x"}));
    assert_eq!(status, 401);
    assert!(v["error"].is_string() && v["error_type"].is_string(), "{v}");

    // TEI /rerank: [{index, score, text}], best first.
    let (status, v) = http(
        &addr,
        "POST",
        "/rerank",
        "k",
        &json!({"query": "What is the capital of France?", "texts": ["Water boils at 100 degrees.", texts[1], texts[0]], "return_text": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["index"], 1, "{v}");
    assert_eq!(v[0]["text"], texts[1]);
    assert!(v[0]["score"].as_f64().unwrap() >= v[1]["score"].as_f64().unwrap());

    // TEI /tokenize: per input, tokens with character spans.
    let (status, v) = http(
        &addr,
        "POST",
        "/tokenize",
        "k",
        &json!({"inputs": "Hello world"}),
    );
    assert_eq!(status, 200, "{v}");
    let toks: Vec<&str> = v[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(toks, ["[CLS]", "Hello", "world", "[SEP]"], "{v}");
    assert_eq!(v[0][2]["start"], 6);

    // Ollama /api/embed: {model, embeddings, durations, prompt_eval_count}.
    let (status, v) = http(
        &addr,
        "POST",
        "/api/embed",
        "k",
        &json!({"model": "all-minilm", "input": texts, "keep_alive": "5m"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "all-minilm");
    let rows = v["embeddings"].as_array().unwrap();
    for (i, r) in rows.iter().enumerate() {
        let e = floats(r);
        assert!((cos(&e, &e) - 1.0).abs() < 1e-4);
        assert!(cos(&e, direct.row(i)) > 0.9999, "row {i}");
    }
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 10, "{v}");
    assert!(v["total_duration"].as_u64().unwrap() > 0, "{v}");
    assert!(v["load_duration"].is_u64(), "{v}");
    let (status, v) = http(
        &addr,
        "POST",
        "/api/embed",
        "k",
        &json!({"input": "x", "dimensions": 128}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 128);
    let (status, v) = http(&addr, "POST", "/api/embed", "k", &json!({"input": 5}));
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "Ollama errors are {{error}}: {v}"
    );
    assert!(v["error"].as_str().unwrap().contains("`input`"), "{v}");
}
