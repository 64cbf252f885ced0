//! The hand-off to Milvus (`--features milvus`) against a real Milvus-protocol server,
//! milvus-lite, started per test on the loopback (tests/common/milvus_server.rs): exports
//! and sharded fills searched through the server give lookalike's own exact answers (FLAT;
//! ids, paths and scores within 1e-5, f32 and f16), and a wrong URI, a stopped server, a
//! width or weights mismatch and an interrupted export give clear errors and lose nothing.
//! Independently of the SDK, pymilvus reads what the collections hold.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::cli::{lookalike, s, Run};
use common::index_fixture::{fixture, lookalike2, run_root, search_queries, PRE};
use common::milvus_server::{python, MilvusServer};
use lookalike::index::{Embeddings, Index};
use lookalike::milvus::{export_index, Collection, CreateOptions, Server};

/// Scores through the server and lookalike's scan agree within this.
const SCORE_TOLERANCE: f64 = 1e-5;

fn server(name: &str) -> MilvusServer {
    let dir = run_root().join(format!("milvus-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    MilvusServer::start(&dir)
}

/// `search` of the fixture's queries, `-k 8` (every readable image), as JSON: on `index`,
/// or through `--milvus URI --collection C` where `index` is `None`.
fn search_json(index: Option<&Path>, milvus: Option<(&str, &str)>) -> Vec<Value> {
    let queries = search_queries();
    let mut args = vec!["search"];
    if let Some(index) = index {
        args.push(s(index));
    }
    if let Some((uri, collection)) = milvus {
        args.extend(["--milvus", uri, "--collection", collection]);
    }
    args.extend(queries.iter().map(|q| s(q)));
    args.extend(["-k", "8", "--json"]);
    let run = lookalike(&args);
    run.assert_success();
    run.json()
}

/// The same neighbours in the same order, scores within [`SCORE_TOLERANCE`]; ids compared
/// too where `same_ids` (an export keeps row numbers; a fill's ids are hashes).
fn assert_same_results(local: &[Value], remote: &[Value], same_ids: bool) {
    assert_eq!(local.len(), remote.len());
    for (l, r) in local.iter().zip(remote) {
        assert_eq!(l["query"], r["query"]);
        let (ln, rn) = (l["neighbors"].as_array().unwrap(), r["neighbors"].as_array().unwrap());
        assert_eq!(ln.len(), rn.len(), "{l}\n{r}");
        for (a, b) in ln.iter().zip(rn) {
            assert_eq!((&a["path"], &a["label"], &a["rank"]), (&b["path"], &b["label"], &b["rank"]), "{l}\n{r}");
            if same_ids {
                assert_eq!(a["index"], b["index"], "{l}\n{r}");
            }
            let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
            assert!((x - y).abs() <= SCORE_TOLERANCE, "scores {x} and {y} differ at rank {}:\n{l}\n{r}", a["rank"]);
        }
    }
}

/// What pymilvus (not the Rust SDK) reads of collection `name`: `{"count", "ids", "paths",
/// "labels", "properties", "dim", "vector_type", "index_type", "metric"}`.
fn pymilvus_view(uri: &str, name: &str) -> Value {
    let script = r#"
import json, sys
from pymilvus import MilvusClient
c = MilvusClient(uri=sys.argv[1])
name = sys.argv[2]
d = c.describe_collection(name)
rows = c.query(name, filter="id >= 0", output_fields=["id", "path", "label"], limit=16384, consistency_level="Strong")
rows = sorted(rows, key=lambda r: r["id"])
vector = [f for f in d["fields"] if f["name"] == "embedding"][0]
index = c.describe_index(name, "embedding")
print(json.dumps({"count": len(rows), "ids": [r["id"] for r in rows], "paths": [r["path"] for r in rows],
    "labels": [r["label"] for r in rows], "properties": d.get("properties", {}),
    "dim": vector["params"]["dim"], "vector_type": str(vector["type"]),
    "index_type": index["index_type"], "metric": index["metric_type"]}))
"#;
    let out = Command::new(python()).args(["-c", script, uri, name]).output().unwrap();
    assert!(out.status.success(), "pymilvus failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn export(index: &Path, uri: &str, collection: &str, extra: &[&str]) -> Run {
    lookalike(&[&["export", s(index), "--milvus", uri, "--collection", collection], extra].concat())
}

#[test]
fn exported_indexes_search_through_the_server_as_they_search_here() {
    let server = server("export");
    let uri = server.uri();
    let f = fixture();

    // f32, centred: the fixture's index.
    let first = export(&f.index, &uri, "photos_f32", &[]);
    first.assert_success();
    assert!(first.stdout.contains("8 rows; wrote 8, 0 already there"), "{}", first.describe());
    // Again: nothing is written twice.
    let again = export(&f.index, &uri, "photos_f32", &[]);
    again.assert_success();
    assert!(again.stdout.contains("wrote 0, 8 already there"), "{}", again.describe());
    let local = search_json(Some(&f.index), None);
    assert_same_results(&local, &search_json(None, Some((&uri, "photos_f32"))), true);

    let view = pymilvus_view(&uri, "photos_f32");
    let index = Index::load(&f.index).unwrap();
    assert_eq!(view["count"], 8);
    assert_eq!(view["ids"], serde_json::json!((0..8).collect::<Vec<i64>>()));
    let paths: Vec<&str> = index.entries.iter().map(|e| e.path.to_str().unwrap()).collect();
    assert_eq!(view["paths"], serde_json::json!(paths));
    let labels: Vec<Option<&str>> = index.entries.iter().map(|e| e.label.as_deref()).collect();
    assert_eq!(view["labels"], serde_json::json!(labels));
    assert_eq!((view["dim"].as_i64(), view["metric"].as_str()), (Some(2048), Some("IP")));
    assert_eq!(view["index_type"], "FLAT");
    let properties = &view["properties"];
    assert_eq!(properties["lookalike.weights_sha256"], "seed:1");
    assert_eq!(properties["lookalike.centered"], "true");
    assert_eq!(properties["lookalike.precision"], "f32");

    // f16, not centred: milvus-lite takes no FLOAT16_VECTOR, so the rows travel widened.
    let f16 = run_root().join("milvus-export-f16.index");
    lookalike2(&["index", s(&f.db), "--seed", "1", "-o", s(&f16), "--dtype", "f16"], &PRE).assert_success();
    export(&f16, &uri, "photos_f16", &[]).assert_success();
    let collection = Collection::open(&Server::new(uri.clone()), "photos_f16").unwrap();
    assert_eq!(collection.layout().precision, lookalike::Precision::F16);
    assert_eq!(collection.vector_type(), lookalike::milvus::VectorType::Float);
    assert_same_results(&search_json(Some(&f16), None), &search_json(None, Some((&uri, "photos_f16"))), true);

    // classify through the server votes as it does here.
    let query = f.path_of("dogs/d1.png");
    let local = lookalike(&["classify", s(&f.index), s(&query), "-k", "3"]);
    let remote = lookalike(&["classify", "--milvus", &uri, "--collection", "photos_f32", s(&query), "-k", "3"]);
    local.assert_success();
    remote.assert_success();
    assert_eq!(local.stdout, remote.stdout);
}

#[test]
fn two_shards_fill_one_collection_that_searches_as_a_local_index() {
    let server = server("shards");
    let uri = server.uri();
    let f = fixture();
    let fill = |shard: &str, extra: &[&str]| {
        let args =
            [&["index", s(&f.db), "--milvus", &uri, "--collection", "sharded", "--shard", shard], extra].concat();
        lookalike2(&args, &PRE)
    };
    // The first shard makes the collection, f16 and centred, computing the mean from the
    // whole folder; the second takes the weights and settings it records.
    let first = fill("0/2", &["--seed", "1", "--center", "--dtype", "f16"]);
    first.assert_success();
    assert!(first.stdout.contains("made the collection and computed its centring mean"), "{}", first.describe());
    let second = fill("1/2", &[]);
    second.assert_success();
    let written = |run: &Run| -> usize {
        let text = run.stdout.split("; wrote ").nth(1).unwrap_or_else(|| panic!("{}", run.describe()));
        text.split(',').next().unwrap().parse().unwrap()
    };
    assert_eq!(written(&first) + written(&second), 8, "{}\n{}", first.describe(), second.describe());
    // Run again, a shard writes nothing new.
    let rerun = fill("0/2", &[]);
    rerun.assert_success();
    assert_eq!(written(&rerun), 0, "{}", rerun.describe());

    let view = pymilvus_view(&uri, "sharded");
    assert_eq!(view["count"], 8);
    let ids: Vec<i64> = view["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert!(ids.iter().all(|&id| id >= 1 << 62), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids repeat: {ids:?}");

    let local = run_root().join("milvus-shards-local.index");
    lookalike2(&["index", s(&f.db), "--seed", "1", "-o", s(&local), "--center", "--dtype", "f16"], &PRE)
        .assert_success();
    assert_same_results(&search_json(Some(&local), None), &search_json(None, Some((&uri, "sharded"))), false);

    // A shard's --mean must be the recorded one; a non-finite one is refused before a
    // collection is made.
    let mean = run_root().join("milvus-shards-other-mean.npy");
    lookalike::npy::write_f32(&mean, &[2048], &[0.25f32; 2048]).unwrap();
    fill("1/2", &["--center", "--mean", s(&mean)]).assert_error(1, None, &["collection `sharded`", "centring mean"]);
    let mut bad = vec![0.25f32; 2048];
    bad[7] = f32::NAN;
    lookalike::npy::write_f32(&mean, &[2048], &bad).unwrap();
    let args = ["index", s(&f.db), "--seed", "1", "--milvus", &uri, "--collection", "nan_mean", "--center", "--mean"];
    lookalike2(&[&args[..], &[s(&mean)]].concat(), &PRE).assert_error(1, None, &["centring mean", "NaN"]);
    assert!(!Collection::exists(&Server::new(uri.clone()), "nan_mean").unwrap());

    // One image under two names (a link to the folder) is one row; an export of an index of
    // the same images writes none of them again.
    let plain = |dir: &Path| {
        let args = ["index", s(dir), "--seed", "1", "--milvus", &uri, "--collection", "plain"];
        let run = lookalike2(&args, &PRE);
        run.assert_success();
        run
    };
    assert_eq!(written(&plain(&f.db)), 8);
    let link = run_root().join("milvus-shards-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&f.db, &link).unwrap();
    assert_eq!(written(&plain(&link)), 0);
    let index = run_root().join("milvus-shards-plain.index");
    lookalike2(&["index", s(&f.db), "--seed", "1", "-o", s(&index)], &PRE).assert_success();
    let export = export(&index, &uri, "plain", &[]);
    export.assert_success();
    assert!(export.stdout.contains("wrote 0, 0 already there, 8 held under other ids"), "{}", export.describe());
    assert_eq!(pymilvus_view(&uri, "plain")["count"], 8);
}

#[test]
fn an_export_cut_off_by_a_stopped_server_completes_without_duplicates() {
    let mut server = server("interrupted");
    let index = Index::load(&fixture().index).unwrap();
    let options = CreateOptions::default();
    // The server stops after the third batch of one row: the fourth write fails, clearly.
    let mut stop_after = Some(3);
    let target = Server::new(server.uri());
    let cut = export_index(&index, &target, "cut", &options, 1, |done, _| {
        if Some(done) == stop_after {
            server.stop();
            stop_after = None;
        }
    });
    let message = cut.unwrap_err().to_string();
    assert!(message.contains(&format!("Milvus at {}", target.uri)), "{message}");
    assert!(message.contains("write 1 rows (ids from 3)") || message.contains("look up rows"), "{message}");

    // Started again on its data: the rows written are there, and the export completes.
    server.restart();
    let target = Server::new(server.uri());
    let (collection, report) = export_index(&index, &target, "cut", &options, 2, |_, _| {}).unwrap();
    assert_eq!((report.already_there, report.written), (3, 5), "{report:?}");
    assert_eq!(collection.len().unwrap(), 8);

    // A shorter index's rows are all there already; another index's rows under the same ids
    // are refused, naming the id, and change nothing.
    let mut other = index.clone();
    other.entries.swap(0, 1);
    let dim = index.dim;
    if let Embeddings::F32(rows) = &mut other.embeddings {
        let (a, b) = rows.split_at_mut(dim);
        a.swap_with_slice(&mut b[..dim]);
    }
    let err = export_index(&other, &target, "cut", &options, 4, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("under id 0") && err.contains("another index's rows"), "{err}");
    assert_eq!(Collection::open(&target, "cut").unwrap().len().unwrap(), 8);
}

#[test]
fn wrong_uris_stopped_servers_and_mismatches_are_clear_errors_that_lose_nothing() {
    let mut server = server("errors");
    let uri = server.uri();
    let f = fixture();
    export(&f.index, &uri, "c", &[]).assert_success();

    // Nothing listening (said at once), and no URI at all.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("http://127.0.0.1:{free}");
    let started = std::time::Instant::now();
    export(&f.index, &nowhere, "c", &[]).assert_error(1, None, &[&format!("Milvus at {nowhere}"), "nothing answers"]);
    assert!(started.elapsed().as_secs() < 8, "a refused connection took {:?}", started.elapsed());
    export(&f.index, "127.0.0.1:19530", "c", &[]).assert_error(1, None, &["write http://HOST:PORT"]);
    export(&f.index, "http://127.0.0.1:99999", "c", &[]).assert_error(1, None, &["port \"99999\""]);

    // Rows of another width, other weights, or a collection that does not exist.
    let narrow = run_root().join("milvus-errors-narrow.index");
    let mut index = Index::load(&f.index).unwrap();
    let rows: Vec<f32> =
        (0..index.len()).flat_map(|i| index.embeddings.rows_f32(index.dim, i, i + 1)[..16].to_vec()).collect();
    index.dim = 16;
    index.mean = None;
    index.embeddings = Embeddings::F32(lookalike::index::normalize_rows(&rows, 16, None));
    index.save(&narrow).unwrap();
    export(&narrow, &uri, "c", &[]).assert_error(1, None, &["collection `c`", "width 16", "2048-d rows"]);
    let convnet = run_root().join("milvus-errors-convnet.safetensors");
    let spec = lookalike::train::ConvNetSpec::recipe(64, 64, 3);
    lookalike::train::ConvNet::glorot(spec, 1).unwrap().save(&convnet).unwrap();
    let query = f.path_of("cats/c1.png");
    let search = |collection: &str, extra: &[&str]| {
        lookalike(&[&["search", "--milvus", &uri, "--collection", collection, s(&query)], extra].concat())
    };
    search("c", &["--weights", s(&convnet)]).assert_error(1, None, &["built with a resnet50"]);
    search("missing", &[]).assert_error(1, None, &["no collection `missing`"]);
    search("c", &["-k", "9"]).assert_error(1, None, &["-k must be between 1 and the 8 images"]);
    search("c", &[s(&f.index)]).assert_error(1, None, &["looks like an index file"]);
    lookalike(&["search", "--milvus", &uri, "--collection", "c"]).assert_error(1, None, &["give query images"]);
    // milvus-lite takes no FLOAT16_VECTOR: asked for, it is a clear error and makes nothing.
    export(&f.index, &uri, "half", &["--vector-type", "float16"]).assert_error(1, None, &["create collection `half`"]);
    assert!(!Collection::exists(&Server::new(uri.clone()), "half").unwrap());
    search("c", &[]).assert_success();

    // A stopped server: a clear error; started again on its data, every row is there.
    server.stop();
    search("c", &[]).assert_error(1, None, &[&format!("Milvus at {uri}"), "nothing answers"]);
    server.restart();
    let uri: String = server.uri();
    assert_eq!(Collection::open(&Server::new(uri.clone()), "c").unwrap().len().unwrap(), 8);
    let again = lookalike(&["search", "--milvus", &uri, "--collection", "c", s(&query), "-k", "1"]);
    again.assert_success();
    assert!(again.stdout.contains(s(&query)), "{}", again.describe());
}
