//! The PostgreSQL store against a real server: one [`LocalServer`] per test process (started by
//! the first test that needs it, stopped when the process ends), a fresh database per test. A
//! server that cannot be started fails the tests with the reason: they are never skipped.

use std::sync::OnceLock;

use super::server::{Durability, LocalServer};
use super::*;
use crate::memory::suite::{self, store_suite};

/// The process's server, started once.
fn server() -> &'static LocalServer {
    static SERVER: OnceLock<Result<LocalServer, String>> = OnceLock::new();
    let started = SERVER.get_or_init(|| {
        let cache = crate::model::files::cache_dir().map_err(|e| e.to_string())?.with_file_name("postgres");
        let server = LocalServer::start(&cache, Durability::Fast).map_err(|e| e.to_string())?;
        eprintln!("PostgreSQL with pgvector started on port {} in {:.2?}", server.port(), server.started_in());
        Ok(server)
    });
    match started {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}

/// The URL of a new, empty database.
fn fresh_url() -> String {
    server().create_database().unwrap()
}

/// A store in a database of its own.
fn fresh() -> ((), PostgresStore) {
    ((), PostgresStore::connect(&fresh_url()).unwrap())
}

/// The backend-independent contract.
mod contract {
    use super::*;
    store_suite!(fresh());
}

const EMBEDDER: &str = suite::BACKEND_EMBEDDER;

fn lesson(text: &str, embedding: Vec<f32>) -> NewItem {
    suite::user_lesson(text, embedding)
}

fn search(store: &dyn MemoryStore, vector: &[f32]) -> Vec<String> {
    suite::found(store, vector)
}

#[test]
fn reconnecting_keeps_the_items_and_the_schema_version() {
    let url = fresh_url();
    let first = PostgresStore::connect(&url).unwrap();
    let kept = first.add(lesson("kept", vec![1.0, 0.0])).unwrap();
    drop(first);
    let again = PostgresStore::connect(&url).unwrap();
    assert_eq!(again.get(kept.id).unwrap(), Some(kept));
    assert_eq!(search(&again, &[1.0, 0.0]), ["kept"]);
    let mut client = Client::connect(&url, NoTls).unwrap();
    let version: String =
        client.query_one("SELECT value FROM troupe_memory_meta WHERE key = 'schema_version'", &[]).unwrap().get(0);
    assert_eq!(version, SCHEMA_VERSION.to_string());
}

#[test]
fn two_connections_see_each_others_writes_at_once() {
    let url = fresh_url();
    let (a, b) = (PostgresStore::connect(&url).unwrap(), PostgresStore::connect(&url).unwrap());
    assert!(search(&b, &[1.0, 0.0]).is_empty());
    let item = a.add(lesson("from a", vec![0.6, 0.8])).unwrap();
    assert_eq!(search(&b, &[1.0, 0.0]), ["from a"]);
    b.update(item.id, "edited by b", &[0.8, 0.6], EMBEDDER).unwrap();
    assert_eq!(a.get(item.id).unwrap().unwrap().text, "edited by b");
    assert!(b.delete(item.id).unwrap());
    assert!(search(&a, &[1.0, 0.0]).is_empty());
}

#[test]
fn a_store_of_a_newer_format_is_refused_and_left_alone() {
    let url = fresh_url();
    drop(PostgresStore::connect(&url).unwrap());
    server().execute(&url, "UPDATE troupe_memory_meta SET value = '2' WHERE key = 'schema_version'").unwrap();
    let error = PostgresStore::connect(&url).unwrap_err();
    let MemoryError::NewerVersion { found, supported, .. } = &error else { panic!("{error}") };
    assert_eq!((*found, *supported), (2, SCHEMA_VERSION));
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{}", server().port())), "{message}");
    assert!(message.contains("Upgrade troupe"), "{message}");
    let mut client = Client::connect(&url, NoTls).unwrap();
    let version: String =
        client.query_one("SELECT value FROM troupe_memory_meta WHERE key = 'schema_version'", &[]).unwrap().get(0);
    assert_eq!(version, "2", "left untouched");
}

#[test]
fn tables_not_made_by_troupe_are_refused() {
    let url = fresh_url();
    server().execute(&url, "CREATE TABLE troupe_memory_meta (key text, value text)").unwrap();
    let message = PostgresStore::connect(&url).unwrap_err().to_string();
    assert!(message.contains("not made by troupe"), "{message}");
}

#[test]
fn a_server_that_is_down_is_named_without_the_password() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let error = PostgresStore::connect(&format!("postgresql://alice:s3cret@127.0.0.1:{port}/team")).unwrap_err();
    assert!(started.elapsed() < DEFAULT_CONNECT_TIMEOUT, "a refused connection fails at once");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("the memory store postgresql://alice@127.0.0.1:{port}/team could not connect"))
    );
    assert!(message.contains("Check that PostgreSQL is running"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn a_malformed_url_says_how_to_write_one() {
    let message = PostgresStore::connect("postgresql://host:notaport/db").unwrap_err().to_string();
    assert!(message.contains("could not read its URL"), "{message}");
    assert!(message.contains("postgresql://user:password@host:port/database"), "{message}");
}

#[test]
fn a_database_without_pgvector_says_how_to_enable_it() {
    let url = fresh_url();
    server().execute(&url, "DROP EXTENSION vector").unwrap();
    // Only a superuser may create the extension: connect as a user that is not one.
    server().execute(&url, "CREATE ROLE plain_user LOGIN").unwrap_or(()); // one per server is enough
    let plain = url.replacen("postgres@", "plain_user@", 1);
    let message = PostgresStore::connect(&plain).unwrap_err().to_string();
    assert!(message.contains("could not enable the pgvector extension"), "{message}");
    assert!(message.contains("CREATE EXTENSION vector"), "{message}");
    // The superuser creates it, as the message says.
    PostgresStore::connect(&url).unwrap();
}

#[test]
fn the_store_works_when_called_inside_an_async_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let url = fresh_url();
    runtime.block_on(async {
        let store = PostgresStore::connect(&url).unwrap();
        store.add(lesson("inside", vec![1.0, 0.0])).unwrap();
        assert_eq!(search(&store, &[1.0, 0.0]), ["inside"]);
        drop(store); // closing the connection must not panic either
    });
}

#[test]
fn the_service_opens_a_postgres_backend_from_url_env() {
    use crate::config::{MemoryBackend, MemorySettings};
    use crate::memory::service::Memory;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_url();
    let settings = MemorySettings {
        backend: MemoryBackend::Postgres { url_env: "TEAM_MEMORY_URL".into() },
        ..MemorySettings::in_folder(dir.path())
    };
    let env = |name: &str| (name == "TEAM_MEMORY_URL").then(|| url.clone());
    let memory = Memory::open_with_env(&settings, dir.path(), &env).unwrap();
    assert!(memory.path().to_string_lossy().starts_with("postgresql://postgres@127.0.0.1:"));
    let item = memory.store().add(lesson("through the service", vec![1.0, 0.0])).unwrap();
    drop(memory);
    let again = PostgresStore::connect(&url).unwrap();
    assert_eq!(again.get(item.id).unwrap().unwrap().text, "through the service");
    assert!(!dir.path().join(".troupe/memory.sqlite").exists(), "no SQLite file was made");
}
