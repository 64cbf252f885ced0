//! One collection on a Milvus server, through the official SDK (`ClientV2`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use milvus::v2::prelude::{
    CollectionSchema, ConsistencyLevel, CreateCollectionRequest, DataType, DescribeCollectionRequest,
    DescribeIndexRequest, FieldData, FieldSchema, InsertRequest, LoadCollectionRequest, MetricType, QueryRequest,
    ResultValue, SearchRequest, SearchVectors, UpsertRequest,
};

use super::ann::{AnnIndex, AnnKind};
use super::connection::{Connection, Server};
use super::layout::{Layout, VectorType, EMBEDDING, ID, LABEL, MAX_TEXT, PATH};
use crate::error::{Error, Result};

/// Ids (or paths) looked up per query.
const LOOKUP_IDS: usize = 4096;
const LOOKUP_PATHS: usize = 1024;
/// The most rows one query or search returns (Milvus's `maxQueryResultWindow`).
const MAX_RESULT_ROWS: usize = 16_384;
/// How long a collection another machine is making may take to become usable.
const CREATE_RACE_WAIT: Duration = Duration::from_secs(20);
/// Vector bytes per upsert request, at most: well within gRPC's message limit.
const UPSERT_BYTES: usize = 16 << 20;

/// How to make a collection that does not exist yet.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Its search structure; `None`: exact ([`AnnIndex::flat`]). Given for a collection
    /// that exists, it must be the one it has.
    pub index: Option<AnnIndex>,
    /// How rows travel; `None`: float16 for f16 rows where the server takes them, else
    /// float.
    pub vector_type: Option<VectorType>,
}

/// One neighbour found through the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Its primary key: the row of an exported index, or the id a folder fill gave it.
    pub id: i64,
    /// Inner product of the unit query and row: the cosine of the (centred) pair.
    pub score: f32,
    /// The image file.
    pub path: String,
    /// Its class, if it has one.
    pub label: Option<String>,
}

/// Rows to write: ids, unit rows `[ids.len(), dim]`, paths and labels.
pub(crate) struct RowBatch<'a> {
    pub ids: Vec<i64>,
    pub rows: &'a [f32],
    pub paths: Vec<String>,
    pub labels: Vec<Option<String>>,
}

/// A lookalike collection on a Milvus server: the rows of one network (its [`Layout`]),
/// keyed by id, with each image's path and label, searched by inner product over unit
/// rows (cosine).
pub struct Collection {
    connection: Connection,
    name: String,
    layout: Layout,
    vector_type: VectorType,
    index: AnnIndex,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("uri", &self.connection.uri)
            .field("name", &self.name)
            .field("dim", &self.layout.dim)
            .field("vector_type", &self.vector_type)
            .field("index", &self.index)
            .finish()
    }
}

impl Collection {
    /// Opens collection `name`, which lookalike made: its layout, vector field and search
    /// structure are read and checked (inner product over rows of the recorded width), and
    /// it is loaded for search.
    pub fn open(server: &Server, name: &str) -> Result<Self> {
        let connection = Connection::open(server)?;
        if !connection.exists(name)? {
            return Err(Error::InvalidArgument(format!(
                "there is no collection `{name}` on {}: export an index to it (`lookalike export`) or fill it \
                 (`lookalike index DIR --milvus`)",
                server.uri
            )));
        }
        Self::describe(connection, name)
    }

    /// Whether collection `name` exists on `server`.
    pub fn exists(server: &Server, name: &str) -> Result<bool> {
        Connection::open(server)?.exists(name)
    }

    /// Makes collection `name` for rows of `layout` where it does not exist (`options` say
    /// how); returns whether this call made it (false where it existed, or another machine
    /// made it meanwhile). It is not checked: [`Collection::open`] it, and
    /// [`Collection::check_accepts`] the rows meant for it.
    pub fn create(server: &Server, name: &str, layout: &Layout, options: &CreateOptions) -> Result<bool> {
        let connection = Connection::open(server)?;
        if connection.exists(name)? {
            return Ok(false);
        }
        match Self::create_on(&connection, name, layout, options) {
            Ok(()) => Ok(true),
            Err(e) => {
                // Another machine making it at the same moment makes this call fail (on
                // milvus-lite, part-way): it is theirs once it shows up.
                let started = std::time::Instant::now();
                while started.elapsed() < CREATE_RACE_WAIT {
                    if connection.exists(name)? {
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e)
            }
        }
    }

    /// [`Collection::open`], waiting up to [`CREATE_RACE_WAIT`] for a collection another
    /// machine is making right now (it exists before its index does).
    pub(crate) fn open_when_ready(server: &Server, name: &str) -> Result<Self> {
        let started = std::time::Instant::now();
        loop {
            match Self::open(server, name) {
                Ok(collection) => return Ok(collection),
                Err(Error::Milvus { .. }) if started.elapsed() < CREATE_RACE_WAIT => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens collection `name` for rows of `layout`, making it where it does not exist
    /// (`options` say how); an existing one must record the same layout (width, network,
    /// preprocessing, precision, mean) and, where `options.index` is given, have that
    /// search structure. Returns it and whether it was made now.
    pub fn open_or_create(
        server: &Server, name: &str, layout: &Layout, options: &CreateOptions,
    ) -> Result<(Self, bool)> {
        let created = Self::create(server, name, layout, options)?;
        let collection = if created { Self::open(server, name)? } else { Self::open_when_ready(server, name)? };
        collection.check_accepts(layout)?;
        collection.check_index(options.index.as_ref())?;
        Ok((collection, created))
    }

    /// Refuses a search structure other than its own (`None` asks for none in particular).
    pub(crate) fn check_index(&self, asked: Option<&AnnIndex>) -> Result<()> {
        match asked {
            Some(index) if index.kind != self.index.kind => Err(Error::InvalidArgument(format!(
                "collection `{}` searches with {}, not {}: leave the index type unset, or use another collection",
                self.name,
                self.index.kind.name(),
                index.kind.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses rows of `layout` where they differ from what the collection records.
    pub fn check_accepts(&self, layout: &Layout) -> Result<()> {
        let differences = layout.differences(&self.layout)?;
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "collection `{}` on {} holds other rows: these would have {}. Use another collection, or the \
             weights and settings it records",
            self.name,
            self.uri(),
            differences.join("; ")
        )))
    }

    fn create_on(connection: &Connection, name: &str, layout: &Layout, options: &CreateOptions) -> Result<()> {
        let index = options.index.clone().unwrap_or_else(AnnIndex::flat);
        index.check()?;
        let f16_rows = layout.precision == crate::shape::Precision::F16;
        let vector_types = match options.vector_type {
            Some(chosen) => vec![chosen],
            // Float16 where the server takes it (milvus-lite refuses the type), else float.
            None if f16_rows => vec![VectorType::Float16, VectorType::Float],
            None => vec![VectorType::Float],
        };
        let dim = u32::try_from(layout.dim)
            .map_err(|_| Error::InvalidArgument(format!("rows of {} values are too wide for Milvus", layout.dim)))?;
        let mut last = None;
        for vector_type in vector_types {
            let data_type = match vector_type {
                VectorType::Float => DataType::FloatVector,
                VectorType::Float16 => DataType::Float16Vector,
            };
            let schema = CollectionSchema::new()
                .description("lookalike image embeddings")
                .add_field(FieldSchema::new().name(ID).data_type(DataType::Int64).primary_key(true))
                .add_field(FieldSchema::new().name(EMBEDDING).data_type(data_type).dimension(dim))
                .add_field(FieldSchema::new().name(PATH).data_type(DataType::VarChar).max_length(MAX_TEXT))
                .add_field(
                    FieldSchema::new().name(LABEL).data_type(DataType::VarChar).max_length(MAX_TEXT).nullable(true),
                );
            let request = CreateCollectionRequest::builder()
                .collection_name(name)
                .schema(schema)
                .index_params(vec![index.sdk()])
                .consistency_level(ConsistencyLevel::Strong)
                .properties(layout.properties())
                .build()
                .map_err(connection.fail("describe a new collection"))?;
            match connection.runtime.block_on(connection.client.create_collection(request)) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(connection.fail(format!("create collection `{name}`"))(e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no vector type to try".into())))
    }

    /// Reads what collection `name` is, checks it, and loads it.
    fn describe(connection: Connection, name: &str) -> Result<Self> {
        let fail = |action: &str| connection.fail(format!("{action} collection `{name}`"));
        let request = DescribeCollectionRequest::builder().collection_name(name).build().map_err(fail("describe"))?;
        let described =
            connection.runtime.block_on(connection.client.describe_collection(request)).map_err(fail("describe"))?;
        let description = described.description();
        let layout = Layout::from_properties(description.get_properties(), name)?;
        let fields = description.get_schema().get_fields();
        let field = |field_name: &str| fields.iter().find(|f| f.get_name() == field_name);
        let foreign = |what: String| {
            Error::InvalidArgument(format!("collection `{name}` is not laid out as lookalike makes them: {what}"))
        };
        match field(ID) {
            Some(f) if f.is_primary_key() && f.get_data_type() == DataType::Int64 => {}
            _ => return Err(foreign(format!("its primary key is not an INT64 `{ID}`"))),
        }
        let vector = field(EMBEDDING).ok_or_else(|| foreign(format!("it has no `{EMBEDDING}` field")))?;
        let vector_type = match vector.get_data_type() {
            DataType::FloatVector => VectorType::Float,
            DataType::Float16Vector => VectorType::Float16,
            other => return Err(foreign(format!("`{EMBEDDING}` is {other:?}, not a float or float16 vector"))),
        };
        if vector.get_dimension() as usize != layout.dim {
            return Err(foreign(format!(
                "`{EMBEDDING}` holds {}-d vectors but its properties record {}-d rows",
                vector.get_dimension(),
                layout.dim
            )));
        }
        for text in [PATH, LABEL] {
            if field(text).map(|f| f.get_data_type()) != Some(DataType::VarChar) {
                return Err(foreign(format!("it has no VARCHAR `{text}` field")));
            }
        }
        let request = DescribeIndexRequest::builder()
            .collection_name(name)
            .field_name(EMBEDDING)
            .build()
            .map_err(fail("describe the index of"))?;
        let indexes = connection
            .runtime
            .block_on(connection.client.describe_index(request))
            .map_err(fail("describe the index of"))?;
        let desc = indexes
            .indexes()
            .iter()
            .find(|d| d.get_field_name() == EMBEDDING)
            .ok_or_else(|| foreign(format!("`{EMBEDDING}` has no index")))?;
        if desc.get_metric_type() != MetricType::Ip {
            return Err(foreign(format!(
                "its index ranks by {:?}, not by inner product (IP) over unit rows",
                desc.get_metric_type()
            )));
        }
        let kind = AnnKind::from_sdk(desc.get_index_type()).ok_or_else(|| {
            foreign(format!("its index is {:?}; lookalike reads FLAT, HNSW and IVF_FLAT", desc.get_index_type()))
        })?;
        let index =
            AnnIndex { kind, params: desc.get_extra_params().iter().map(|(k, v)| (k.clone(), v.clone())).collect() };
        let load = LoadCollectionRequest::builder().collection_name(name).build().map_err(fail("load"))?;
        connection.runtime.block_on(connection.client.load_collection(load)).map_err(fail("load"))?;
        Ok(Self { connection, name: name.to_string(), layout, vector_type, index })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's address.
    pub fn uri(&self) -> &str {
        &self.connection.uri
    }

    /// What it records of its rows.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How its rows travel.
    pub fn vector_type(&self) -> VectorType {
        self.vector_type
    }

    /// Its search structure.
    pub fn index(&self) -> &AnnIndex {
        &self.index
    }

    fn fail(&self, action: impl Into<String>) -> impl FnOnce(milvus::v2::error::Error) -> Error + '_ {
        self.connection.fail(action)
    }

    /// Rows it holds now (every write before this call counted).
    pub fn len(&self) -> Result<u64> {
        let fail = || self.fail(format!("count the rows of `{}`", self.name));
        let request = QueryRequest::builder()
            .collection_name(&self.name)
            .filter("")
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(fail())?;
        let response = self.connection.runtime.block_on(self.connection.client.query(request)).map_err(fail())?;
        let rows = response.results().rows().map_err(fail())?;
        for row in rows {
            if let ResultValue::Int64(count) = row.get("count(*)").map_err(fail())? {
                return u64::try_from(count).map_err(|_| self.malformed(format!("a count of {count}")));
            }
        }
        Err(self.malformed("no count".into()))
    }

    /// Whether it holds no rows.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    fn malformed(&self, what: String) -> Error {
        Error::Milvus {
            uri: self.connection.uri.clone(),
            action: format!("read from `{}`", self.name),
            reason: format!("unexpected answer: {what}"),
        }
    }

    /// The path stored under each of `ids` that it holds.
    pub(crate) fn paths_of_ids(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut found = HashMap::new();
        for part in ids.chunks(LOOKUP_IDS) {
            let list: Vec<String> = part.iter().map(i64::to_string).collect();
            found.extend(self.id_path_pairs(format!("{ID} in [{}]", list.join(",")), part.len())?);
        }
        Ok(found)
    }

    /// The id stored with each of `paths` that it holds.
    pub(crate) fn ids_of_paths(&self, paths: &[&str]) -> Result<HashMap<String, i64>> {
        let mut found = HashMap::new();
        for part in paths.chunks(LOOKUP_PATHS) {
            // A JSON string literal is a Milvus one: quotes, backslashes and control
            // characters escaped the same way.
            let list: Vec<String> = part.iter().map(|p| serde_json::Value::from(*p).to_string()).collect();
            let pairs = self.id_path_pairs(format!("{PATH} in [{}]", list.join(",")), part.len())?;
            found.extend(pairs.into_iter().map(|(id, path)| (path, id)));
        }
        Ok(found)
    }

    fn id_path_pairs(&self, filter: String, at_most: usize) -> Result<Vec<(i64, String)>> {
        let fail = || self.fail(format!("look up rows of `{}`", self.name));
        let request = QueryRequest::builder()
            .collection_name(&self.name)
            .filter(filter)
            .output_fields([ID, PATH])
            // Every match (a path may be stored twice by hand): the limit leaves room,
            // within the server's largest result.
            .limit((at_most * 2 + 16).min(MAX_RESULT_ROWS) as i64)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(fail())?;
        let response = self.connection.runtime.block_on(self.connection.client.query(request)).map_err(fail())?;
        let mut pairs = Vec::new();
        for row in response.results().rows().map_err(fail())? {
            let id = match row.get(ID).map_err(fail())? {
                ResultValue::Int64(id) => id,
                other => return Err(self.malformed(format!("id {other:?}"))),
            };
            let path = match row.get(PATH).map_err(fail())? {
                ResultValue::String(path) => path.to_string(),
                other => return Err(self.malformed(format!("path {other:?}"))),
            };
            pairs.push((id, path));
        }
        Ok(pairs)
    }

    /// Writes rows, replacing any of the same ids (an upsert: writing a batch twice leaves
    /// one copy), in requests of at most [`UPSERT_BYTES`] of vectors. Paths and labels must
    /// fit [`MAX_TEXT`] bytes.
    pub(crate) fn upsert(&self, batch: RowBatch) -> Result<()> {
        let dim = self.layout.dim;
        let n = batch.ids.len();
        if batch.rows.len() != n * dim || batch.paths.len() != n || batch.labels.len() != n {
            return Err(Error::shape(
                "rows to write",
                format!("{n} rows of {dim}"),
                format!("{} values, {} paths, {} labels", batch.rows.len(), batch.paths.len(), batch.labels.len()),
            ));
        }
        let per_request = (UPSERT_BYTES / (4 * dim).max(1)).max(1);
        let RowBatch { ids, rows, paths, labels } = batch;
        let (mut paths, mut labels) = (paths.into_iter(), labels.into_iter());
        for (part, part_rows) in ids.chunks(per_request).zip(rows.chunks(per_request * dim)) {
            let part_paths: Vec<String> = paths.by_ref().take(part.len()).collect();
            let part_labels: Vec<Option<String>> = labels.by_ref().take(part.len()).collect();
            self.upsert_request(part.to_vec(), part_rows, part_paths, part_labels)?;
        }
        Ok(())
    }

    fn upsert_request(
        &self, ids: Vec<i64>, rows: &[f32], paths: Vec<String>, labels: Vec<Option<String>>,
    ) -> Result<()> {
        let dim = self.layout.dim;
        let first = ids[0];
        let vectors = match self.vector_type {
            VectorType::Float => FieldData::FloatVector {
                name: EMBEDDING.into(),
                values: rows.chunks(dim).map(<[f32]>::to_vec).collect(),
            },
            VectorType::Float16 => FieldData::Float16Vector {
                name: EMBEDDING.into(),
                values: rows
                    .chunks(dim)
                    .map(|r| r.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect())
                    .collect(),
            },
        };
        let valid: Vec<bool> = labels.iter().map(Option::is_some).collect();
        let label_values: Vec<String> = labels.into_iter().flatten().collect();
        let count = ids.len();
        let fail = || self.fail(format!("write {count} rows (ids from {first}) to `{}`", self.name));
        let label_column = FieldData::nullable(FieldData::varchar(LABEL, label_values), valid).map_err(fail())?;
        let insert = InsertRequest::builder()
            .collection_name(&self.name)
            .columns(vec![FieldData::int64(ID, ids), vectors, FieldData::varchar(PATH, paths), label_column])
            .build()
            .map_err(fail())?;
        let request = UpsertRequest::builder().insert(insert).build().map_err(fail())?;
        self.connection.runtime.block_on(self.connection.client.upsert(request)).map_err(fail())?;
        Ok(())
    }

    /// The `k` nearest rows of each unit query row (`[queries, dim]`, centred on the
    /// collection's mean where it has one, then normalised: what
    /// [`crate::Embedder::embed_decoded_unit`] gives), best first. `params` go to the
    /// server's search (`ef` for HNSW, `nprobe` for IVF_FLAT).
    pub fn search_units(&self, queries: &[f32], k: usize, params: &BTreeMap<String, String>) -> Result<Vec<Vec<Hit>>> {
        let dim = self.layout.dim;
        if queries.is_empty() || !queries.len().is_multiple_of(dim) {
            return Err(Error::shape(
                "unit queries",
                format!("rows of {dim} values"),
                format!("{} values", queries.len()),
            ));
        }
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        let vectors = match self.vector_type {
            VectorType::Float => SearchVectors::Float(queries.chunks(dim).map(<[f32]>::to_vec).collect()),
            VectorType::Float16 => SearchVectors::Float16(
                queries.chunks(dim).map(|r| r.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect()).collect(),
            ),
        };
        let fail = || self.fail(format!("search `{}`", self.name));
        let request = SearchRequest::builder()
            .collection_name(&self.name)
            .vector_field(EMBEDDING)
            .vectors(vectors)
            .limit(k as i64)
            .metric_type(MetricType::Ip)
            .output_fields([PATH, LABEL])
            .extra_params(params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(fail())?;
        let response = self.connection.runtime.block_on(self.connection.client.search(request)).map_err(fail())?;
        let mut out = Vec::new();
        for result in response.results().iter() {
            let mut hits = Vec::new();
            for row in result.rows().map_err(fail())? {
                let id = match row.get(ID).map_err(fail())? {
                    ResultValue::Int64(id) => id,
                    other => return Err(self.malformed(format!("id {other:?}"))),
                };
                let score = match row.get("score").map_err(fail())? {
                    ResultValue::Float(score) => score,
                    other => return Err(self.malformed(format!("score {other:?}"))),
                };
                let path = match row.get(PATH).map_err(fail())? {
                    ResultValue::String(path) => path.to_string(),
                    other => return Err(self.malformed(format!("path {other:?}"))),
                };
                let label = match row.get(LABEL).map_err(fail())? {
                    ResultValue::String(label) => Some(label.to_string()),
                    ResultValue::Null => None,
                    other => return Err(self.malformed(format!("label {other:?}"))),
                };
                hits.push(Hit { id, score, path, label });
            }
            out.push(hits);
        }
        if out.len() != queries.len() / dim {
            return Err(self.malformed(format!("{} result lists for {} queries", out.len(), queries.len() / dim)));
        }
        Ok(out)
    }
}
