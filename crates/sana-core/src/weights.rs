//! Checkpoint loading: diffusers/transformers safetensors files (single, sharded, variants),
//! memory-mapped, validated against their headers, converted tensor by tensor to the compute dtype.
//!
//! Two layers:
//! - [`WeightFiles`]: the memory-mapped files and an index of every tensor (name → file, dtype, shape,
//!   byte range). Opening validates every header and every tensor's byte range; no data is read yet.
//! - [`ParamStore`]: every tensor loaded onto the device in the compute dtype, by checkpoint name.
//!   Model code reads it through [`Vb`] (`vb.pp("transformer_blocks").pp(0).get((c, c), "weight")`),
//!   which checks names and shapes. Tensors are reference-counted, so a model and the store share memory.

use crate::{Result, SanaError};
use candle_core::{DType, Device, Shape, Tensor};
use memmap2::Mmap;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub mod adapters;

/// Where one tensor lives on disk.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub file: usize,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// The memory-mapped safetensors files of one component.
pub struct WeightFiles {
    pub paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    pub index: BTreeMap<String, TensorEntry>,
    /// The headers' `__metadata__` string maps, one per file (LoRA files keep their config there).
    pub metadata: Vec<BTreeMap<String, String>>,
}

/// Candidate file names for a component, in the order diffusers/transformers try them.
fn candidates(base: &str, variant: Option<&str>) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    if let Some(v) = variant {
        out.push((format!("{base}.{v}.safetensors"), false));
        out.push((format!("{base}.safetensors.index.{v}.json"), true));
        out.push((format!("{base}.{v}.safetensors.index.json"), true));
    }
    out.push((format!("{base}.safetensors"), false));
    out.push((format!("{base}.safetensors.index.json"), true));
    out
}

impl WeightFiles {
    /// Find and open the weights of a component folder. `bases` are the stem names to try
    /// (`diffusion_pytorch_model` for diffusers models, `model` for transformers models).
    /// A requested `variant` (`fp16`, `bf16`) is preferred; the plain files are the fallback.
    pub fn open_component(dir: &Path, bases: &[&str], variant: Option<&str>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(SanaError::not_found("component folder", dir));
        }
        for base in bases {
            for (name, is_index) in candidates(base, variant) {
                let path = dir.join(&name);
                if path.is_file() {
                    return if is_index { Self::open_sharded(&path) } else { Self::open(&[path]) };
                }
            }
        }
        let expected = bases.iter().map(|b| format!("{b}.safetensors")).collect::<Vec<_>>().join(" or ");
        Err(SanaError::not_found(format!("weights file ({expected})"), dir))
    }

    /// Open a sharded checkpoint from its `*.safetensors.index.json`.
    pub fn open_sharded(index_path: &Path) -> Result<Self> {
        let json = crate::config::read_json(index_path)?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| SanaError::InvalidConfig {
            path: index_path.to_path_buf(),
            msg: "missing \"weight_map\" object".into(),
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<PathBuf> = Vec::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| SanaError::InvalidConfig {
                path: index_path.to_path_buf(),
                msg: format!("weight_map entry for \"{tensor}\" is not a file name"),
            })?;
            let p = dir.join(file);
            if !shards.contains(&p) {
                shards.push(p);
            }
        }
        shards.sort();
        for p in &shards {
            if !p.is_file() {
                return Err(SanaError::not_found(format!("shard listed in {}", index_path.display()), p));
            }
        }
        let files = Self::open(&shards)?;
        // Every tensor the index promises must be in the shard it names.
        for (tensor, file) in map {
            let want = dir.join(file.as_str().unwrap_or_default());
            match files.index.get(tensor) {
                Some(e) if files.paths[e.file] == want => {}
                _ => return Err(SanaError::WeightMissing { path: want, name: tensor.clone() }),
            }
        }
        Ok(files)
    }

    /// Memory-map the files and validate every header and tensor byte range.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::with_capacity(paths.len());
        let mut index = BTreeMap::new();
        let mut metadata = Vec::with_capacity(paths.len());
        for (fi, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => SanaError::not_found("weights file", path),
                _ => SanaError::Io { path: path.clone(), source: e },
            })?;
            // SAFETY: the map is read-only; a file truncated by another process while mapped could
            // fault, which is the usual caveat of every mmap-based loader (safetensors, candle).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| SanaError::Io { path: path.clone(), source: e })?;
            let (entries, meta) = parse_header(path, &map, fi)?;
            metadata.push(meta);
            for (name, entry) in entries {
                if index.contains_key(&name) {
                    return Err(SanaError::CorruptWeights {
                        path: path.clone(),
                        msg: format!("tensor \"{name}\" appears in more than one file"),
                    });
                }
                index.insert(name, entry);
            }
            maps.push(map);
        }
        Ok(WeightFiles { paths: paths.to_vec(), maps, index, metadata })
    }

    /// The raw little-endian bytes of one tensor.
    pub fn bytes(&self, e: &TensorEntry) -> &[u8] {
        &self.maps[e.file][e.start..e.end]
    }

    /// Load every tensor onto `device` as `dtype` (float tensors; see [`decode_tensor`]), except where
    /// `place` says otherwise ([`Placement`]).
    /// Pages of the mapping are released as tensors are converted, so peak RSS stays near the converted size.
    ///
    /// `dtype` is the dtype the tensors are *stored* in. Computation runs in [`compute_dtype`]`(dtype, device)`:
    /// the same on CUDA; f32 on the CPU, where half-precision weights stay half in memory (half the RSS) and
    /// are widened where they are used (see [`Vb::get`] and [`Vb::get_weight`]).
    pub fn load_all(self: &Arc<Self>, device: &Device, dtype: DType, place: &dyn Fn(&str) -> Placement) -> Result<ParamStore> {
        let compute = compute_dtype(dtype, device);
        let mut tensors = BTreeMap::new();
        let mut mapped = BTreeMap::new();
        let mut deferred = BTreeMap::new();
        for (name, e) in &self.index {
            match place(name) {
                Placement::KeepMapped => {
                    check_decodable(&self.paths[e.file], name, e.dtype)?;
                    mapped.insert(name.clone(), MappedTensor { files: self.clone(), name: name.clone(), entry: e.clone(), dtype: compute });
                }
                Placement::Defer => {
                    check_decodable(&self.paths[e.file], name, e.dtype)?;
                    deferred.insert(name.clone(), DeferredTensor { files: self.clone(), entry: e.clone(), device: device.clone(), dtype });
                }
                Placement::Load => {
                    let t = decode_tensor(&self.paths[e.file], name, e, self.bytes(e), device, dtype, &|b| self.release(e.file, b))?;
                    tensors.insert(name.clone(), t);
                }
            }
        }
        Ok(ParamStore {
            tensors,
            mapped,
            deferred,
            sources: self.index.iter().map(|(n, e)| (n.clone(), (self.paths[e.file].clone(), e.dtype))).collect(),
            compute,
            used: Mutex::new(HashSet::new()),
        })
    }

    /// Drop the mapped pages under `bytes` (a sub-slice of file `file`'s map) once they are decoded.
    #[cfg(unix)]
    fn release(&self, file: usize, bytes: &[u8]) {
        let map = &self.maps[file];
        let page = 4096;
        let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
        // Whole pages only: a partial page at either end may still hold a neighbour's bytes.
        let start = offset.div_ceil(page) * page;
        let end = (offset + bytes.len()) / page * page;
        if end > start {
            // SAFETY: read-only private file mapping; DONTNEED only drops clean pages, which the kernel
            // re-reads if they are touched again. Failure only costs memory, so it is ignored.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }
    #[cfg(not(unix))]
    fn release(&self, _file: usize, _bytes: &[u8]) {}
}

/// A parsed header: the tensors and the `__metadata__` map (empty without one).
type Header = (Vec<(String, TensorEntry)>, BTreeMap<String, String>);

/// Parse and validate a safetensors header: 8-byte length, JSON, and each tensor's byte range.
fn parse_header(path: &Path, buf: &[u8], file: usize) -> Result<Header> {
    let corrupt = |msg: String| SanaError::CorruptWeights { path: path.to_path_buf(), msg };
    if buf.len() < 8 {
        return Err(corrupt(format!("file is {} bytes, too short for a safetensors header", buf.len())));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
    if n > buf.len() - 8 {
        return Err(corrupt(format!("header length {n} exceeds file size {} (truncated?)", buf.len())));
    }
    let header: serde_json::Value = serde_json::from_slice(&buf[8..8 + n])
        .map_err(|e| corrupt(format!("header is not valid JSON: {e}")))?;
    let obj = header.as_object().ok_or_else(|| corrupt("header is not a JSON object".into()))?;
    let data_start = 8 + n;
    let data_len = buf.len() - data_start;
    let mut out = Vec::with_capacity(obj.len());
    let mut metadata = BTreeMap::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            // safetensors defines it as a string → string map.
            metadata = serde_json::from_value(info.clone()).map_err(|e| corrupt(format!("__metadata__ is not a string map: {e}")))?;
            continue;
        }
        let info: safetensors::tensor::TensorInfo = serde_json::from_value(info.clone())
            .map_err(|e| corrupt(format!("tensor \"{name}\": bad header entry: {e}")))?;
        let (b, e) = info.data_offsets;
        let numel: usize = info.shape.iter().product();
        let expected = numel * info.dtype.bitsize() / 8;
        if b > e || e - b != expected {
            return Err(corrupt(format!(
                "tensor \"{name}\": byte range {b}..{e} does not match shape {:?} of {:?} ({expected} bytes)",
                info.shape, info.dtype
            )));
        }
        if e > data_len {
            return Err(corrupt(format!(
                "tensor \"{name}\": data ends at byte {e} but the file has only {data_len} data bytes (truncated?)"
            )));
        }
        out.push((
            name.clone(),
            TensorEntry { file, dtype: info.dtype, shape: info.shape, start: data_start + b, end: data_start + e },
        ));
    }
    Ok((out, metadata))
}

/// Decode in 8 MiB pieces, handing each decoded piece to `release`, so a large tensor never has its
/// whole file image and its converted copy resident at once.
fn decode_chunked<T>(bytes: &[u8], elem: usize, f: impl Fn(&[u8]) -> T, release: &dyn Fn(&[u8])) -> Vec<T> {
    const CHUNK: usize = 8 << 20;
    let mut out = Vec::with_capacity(bytes.len() / elem);
    for piece in bytes.chunks(CHUNK - CHUNK % elem) {
        out.extend(piece.chunks_exact(elem).map(&f));
        release(piece);
    }
    out
}

/// Decode one tensor's bytes into a `dtype` tensor on `device`; `release` is told which file bytes are done.
/// bf16/f16 → f32 is exact; f32/f16 → bf16 rounds to nearest even.
pub fn decode_tensor(
    path: &Path,
    name: &str,
    e: &TensorEntry,
    bytes: &[u8],
    device: &Device,
    dtype: DType,
    release: &dyn Fn(&[u8]),
) -> Result<Tensor> {
    use safetensors::Dtype as S;
    let shape = Shape::from(e.shape.clone());
    let cpu = &Device::Cpu;
    let t = match e.dtype {
        S::F32 => Tensor::from_vec(decode_chunked(bytes, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]), release), shape, cpu)?,
        S::BF16 if dtype == DType::F32 => {
            Tensor::from_vec(decode_chunked(bytes, 2, |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32(), release), shape, cpu)?
        }
        S::F16 if dtype == DType::F32 => {
            Tensor::from_vec(decode_chunked(bytes, 2, |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32(), release), shape, cpu)?
        }
        S::BF16 => Tensor::from_vec(decode_chunked(bytes, 2, |c| half::bf16::from_le_bytes([c[0], c[1]]), release), shape, cpu)?,
        S::F16 => Tensor::from_vec(decode_chunked(bytes, 2, |c| half::f16::from_le_bytes([c[0], c[1]]), release), shape, cpu)?,
        S::F64 => {
            let f = |c: &[u8]| f64::from_le_bytes(c.try_into().expect("8-byte chunk"));
            Tensor::from_vec(decode_chunked(bytes, 8, f, release), shape, cpu)?
        }
        other => {
            return Err(SanaError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    let t = if t.dtype() != dtype { t.to_dtype(dtype)? } else { t };
    Ok(if device.is_cpu() { t } else { t.to_device(device)? })
}

fn check_decodable(path: &Path, name: &str, dtype: safetensors::Dtype) -> Result<()> {
    use safetensors::Dtype as S;
    match dtype {
        S::F32 | S::F16 | S::BF16 => Ok(()),
        other => Err(SanaError::UnsupportedDtype { path: path.to_path_buf(), name: name.into(), dtype: format!("{other:?}") }),
    }
}

/// Where [`WeightFiles::load_all`] puts a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Decoded now into the store.
    Load,
    /// Left in the file mapping, read row by row ([`MappedTensor`]).
    KeepMapped,
    /// Decoded when a model asks for it, and not kept by the store ([`DeferredTensor`]).
    Defer,
}

/// A tensor decoded only when the model asks for it, for weights the model re-lays out while it builds
/// (the DiT concatenates q/k/v into one GEMM weight): loaded up front, the originals and the merged copy
/// would all be resident until the build ends (+30 % of the DiT's weights at load); deferred, each
/// original is a transient of its own layer.
#[derive(Clone)]
pub struct DeferredTensor {
    files: Arc<WeightFiles>,
    entry: TensorEntry,
    device: Device,
    /// The dtype it is stored in (as loaded tensors are).
    dtype: DType,
}

impl DeferredTensor {
    pub fn load(&self, name: &str) -> Result<Tensor> {
        let (f, e) = (&self.files, &self.entry);
        decode_tensor(&f.paths[e.file], name, e, f.bytes(e), &self.device, self.dtype, &|b| f.release(e.file, b))
    }
}

/// A 2-D tensor left in the file mapping and read a row at a time — for embedding tables, where a prompt
/// touches a few hundred of 256,000 rows: Gemma-2's table is 2.4 GB in f32 that never has to be resident.
#[derive(Clone)]
pub struct MappedTensor {
    files: Arc<WeightFiles>,
    name: String,
    entry: TensorEntry,
    /// Dtype rows are converted to (the component's compute dtype).
    dtype: DType,
}

impl MappedTensor {
    pub fn dims(&self) -> &[usize] {
        &self.entry.shape
    }

    /// Rows `ids` as a [ids.len(), cols] tensor on the CPU, converted to the compute dtype.
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let (n_rows, cols) = match self.entry.shape[..] {
            [r, c] => (r, c),
            _ => return Err(SanaError::invalid_arg("ids", format!("{} is not a 2-D table", self.name))),
        };
        let elem = self.entry.dtype.bitsize() / 8;
        let bytes = self.files.bytes(&self.entry);
        let mut out = Vec::with_capacity(ids.len() * cols);
        for &id in ids {
            let id = id as usize;
            crate::ensure_arg!(id < n_rows, "inputIds", "token id {id} is out of range for a vocabulary of {n_rows}");
            let row = &bytes[id * cols * elem..(id + 1) * cols * elem];
            match self.entry.dtype {
                safetensors::Dtype::F32 => out.extend(row.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
                safetensors::Dtype::BF16 => out.extend(row.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
                _ => out.extend(row.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
            }
        }
        Ok(Tensor::from_vec(out, (ids.len(), cols), &Device::Cpu)?.to_dtype(self.dtype)?)
    }

    /// The whole tensor, decoded (for introspection such as `getWeight`).
    pub fn load(&self) -> Result<Tensor> {
        let e = &self.entry;
        decode_tensor(&self.files.paths[e.file], &self.name, e, self.files.bytes(e), &Device::Cpu, self.dtype, &|_| {})
    }
}

/// Where embedding rows come from: a loaded tensor (any device) or the file mapping (CPU).
#[derive(Clone)]
pub enum RowSource {
    Loaded(Tensor),
    Mapped(MappedTensor),
}

impl RowSource {
    pub fn dims(&self) -> &[usize] {
        match self {
            RowSource::Loaded(t) => t.dims(),
            RowSource::Mapped(m) => m.dims(),
        }
    }

    /// Compute dtype of the gathered rows.
    pub fn dtype(&self) -> DType {
        match self {
            RowSource::Loaded(t) => t.dtype(),
            RowSource::Mapped(m) => m.dtype,
        }
    }

    /// `table[ids]`: ids [N] (any integer dtype) → [N, cols], on the table's device (CPU when mapped).
    pub fn gather(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            RowSource::Loaded(t) => Ok(t.index_select(&ids.to_device(t.device())?, 0)?),
            RowSource::Mapped(m) => m.rows(&ids.to_dtype(DType::U32)?.to_vec1::<u32>()?),
        }
    }
}

/// Every tensor of a component, loaded, by checkpoint name.
pub struct ParamStore {
    pub tensors: BTreeMap<String, Tensor>,
    /// Tensors left in the file mapping (see [`MappedTensor`]).
    pub mapped: BTreeMap<String, MappedTensor>,
    /// Tensors decoded on request (see [`DeferredTensor`]); a model's views replace them after its build.
    pub deferred: BTreeMap<String, DeferredTensor>,
    /// Source file and stored dtype of each tensor, for error messages and introspection.
    pub sources: BTreeMap<String, (PathBuf, safetensors::Dtype)>,
    /// The dtype the models compute in (see [`compute_dtype`]); `tensors` may be stored in a narrower one.
    compute: DType,
    used: Mutex<HashSet<String>>,
}

/// The dtype a model whose weights are stored as `weights` computes in on `device`: the weights' own on
/// CUDA; f32 on the CPU, where candle's matmul and our fused ops are f32 (half weights are widened as
/// they are used: [`crate::ops::cpu_weight`]).
pub fn compute_dtype(weights: DType, device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        weights
    }
}

impl ParamStore {
    /// Build a store from tensors already in memory (tests, random-weight benchmarks).
    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Self {
        let sources = tensors.keys().map(|k| (k.clone(), (PathBuf::from("<memory>"), safetensors::Dtype::F32))).collect();
        let compute = tensors.values().next().map(|t| compute_dtype(t.dtype(), t.device())).unwrap_or(DType::F32);
        ParamStore { tensors, mapped: BTreeMap::new(), deferred: BTreeMap::new(), sources, compute, used: Mutex::new(HashSet::new()) }
    }

    pub fn root(self: &Arc<Self>) -> Vb {
        Vb { store: self.clone(), prefix: String::new() }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.sources.get(name).map(|s| s.0.clone()).unwrap_or_else(|| PathBuf::from("<checkpoint>"))
    }

    /// Names present in the checkpoint that no model code asked for (a sign of a config mismatch).
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock().expect("poisoned");
        self.tensors.keys().chain(self.mapped.keys()).chain(self.deferred.keys()).filter(|k| !used.contains(*k)).cloned().collect()
    }

    /// Every tensor's name, shape and compute dtype, loaded or mapped.
    pub fn infos(&self) -> Vec<(String, Vec<usize>, DType)> {
        let loaded = self.tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec(), t.dtype()));
        let mapped = self.mapped.iter().map(|(n, m)| (n.clone(), m.dims().to_vec(), m.dtype));
        let deferred = self.deferred.iter().map(|(n, d)| (n.clone(), d.entry.shape.clone(), d.dtype));
        let mut all: Vec<_> = loaded.chain(mapped).chain(deferred).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// One tensor by name; a mapped one is decoded in full.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        match self.mapped.get(name) {
            Some(m) if !self.tensors.contains_key(name) => m.load().map(Some),
            _ => self.loaded_or_deferred(name),
        }
    }

    /// A loaded tensor, or a deferred one decoded now (what models build from; mapped tables are read by row).
    fn loaded_or_deferred(&self, name: &str) -> Result<Option<Tensor>> {
        match (self.tensors.get(name), self.deferred.get(name)) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(d)) => d.load(name).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Fail if the checkpoint has tensors that the model did not consume.
    pub fn ensure_all_used(&self, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let unused: Vec<String> = self.unused().into_iter().filter(|n| !ignore(n)).collect();
        if let Some(first) = unused.first() {
            return Err(SanaError::InvalidConfig {
                path: self.path_of(first),
                msg: format!(
                    "{} checkpoint tensor(s) are not used by the model built from config.json (first: \"{first}\"); \
                     the config and weights do not match",
                    unused.len()
                ),
            });
        }
        Ok(())
    }
}

/// A view of the store under a name prefix, like candle-nn's `VarBuilder`.
#[derive(Clone)]
pub struct Vb {
    store: Arc<ParamStore>,
    prefix: String,
}

impl Vb {
    /// Descend: `vb.pp("transformer_blocks").pp(3)`.
    pub fn pp(&self, name: impl ToString) -> Vb {
        let name = name.to_string();
        let prefix = if self.prefix.is_empty() { name } else { format!("{}.{name}", self.prefix) };
        Vb { store: self.store.clone(), prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        let full = self.full(name);
        self.store.tensors.contains_key(&full) || self.store.mapped.contains_key(&full) || self.store.deferred.contains_key(&full)
    }

    /// A 2-D lookup table `prefix.name` of exactly `shape`, loaded or left mapped (see [`RowSource`]).
    pub fn get_rows(&self, shape: (usize, usize), name: &str) -> Result<RowSource> {
        let full = self.full(name);
        let Some(m) = self.store.mapped.get(&full) else { return self.get(shape, name).map(RowSource::Loaded) };
        if m.dims() != [shape.0, shape.1] {
            return Err(SanaError::ShapeMismatch {
                path: self.store.path_of(&full),
                name: full,
                expected: vec![shape.0, shape.1],
                got: m.dims().to_vec(),
                hint: String::new(),
            });
        }
        self.store.used.lock().expect("poisoned").insert(full);
        Ok(RowSource::Mapped(m.clone()))
    }

    /// The tensor `prefix.name`, which must have exactly `shape`, in the compute dtype ([`Vb::dtype`]): for
    /// biases, norms, tables and small convs. A half-precision store on the CPU gives an f32 copy.
    pub fn get(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        let t = self.get_weight(shape, name)?;
        Ok(if t.dtype() != self.store.compute { t.to_dtype(self.store.compute)? } else { t })
    }

    /// A weight matrix (Linear, conv) as stored: bf16/f16 on a CPU that keeps half weights, which only the
    /// GEMM-based ops read ([`crate::models::linear::Linear`], [`crate::ops::conv2d::conv2d`]).
    pub fn get_weight(&self, shape: impl Into<Shape>, name: &str) -> Result<Tensor> {
        let full = self.full(name);
        let t = self.get_any(&full)?;
        let shape: Shape = shape.into();
        if t.dims() != shape.dims() {
            return Err(SanaError::ShapeMismatch {
                path: self.store.path_of(&full),
                name: full,
                expected: shape.dims().to_vec(),
                got: t.dims().to_vec(),
                hint: String::new(),
            });
        }
        Ok(t)
    }

    /// Optional tensor: `Ok(None)` if absent, shape-checked if present.
    pub fn get_opt(&self, shape: impl Into<Shape>, name: &str) -> Result<Option<Tensor>> {
        if self.contains(name) {
            self.get(shape, name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The tensor with whatever shape it has (for shapes the config does not determine).
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        let t = self.get_any(&self.full(name))?;
        Ok(if t.dtype() != self.store.compute { t.to_dtype(self.store.compute)? } else { t })
    }

    fn get_any(&self, full: &str) -> Result<Tensor> {
        match self.store.loaded_or_deferred(full)? {
            Some(t) => {
                self.store.used.lock().expect("poisoned").insert(full.to_string());
                Ok(t)
            }
            None => Err(SanaError::WeightMissing {
                path: self.store.sources.values().next().map(|s| s.0.clone()).unwrap_or_default(),
                name: full.to_string(),
            }),
        }
    }

    pub fn device(&self) -> Device {
        self.store.tensors.values().next().map(|t| t.device().clone()).unwrap_or(Device::Cpu)
    }

    /// The dtype activations are computed in.
    pub fn dtype(&self) -> DType {
        self.store.compute
    }

    /// The dtype weight matrices are stored in ([`Vb::get_weight`]).
    pub fn weight_dtype(&self) -> DType {
        self.store.tensors.values().next().map(|t| t.dtype()).unwrap_or(self.store.compute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bf16 [rows, cols] table written as a safetensors file.
    fn write_table(path: &Path, rows: usize, cols: usize) -> Vec<f32> {
        let values: Vec<f32> = (0..rows * cols).map(|i| half::bf16::from_f32(i as f32 * 0.25 - 7.0).to_f32()).collect();
        let header = format!(
            r#"{{"emb.weight":{{"dtype":"BF16","shape":[{rows},{cols}],"data_offsets":[0,{}]}}}}"#,
            rows * cols * 2
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        for v in &values {
            bytes.extend(half::bf16::from_f32(*v).to_le_bytes());
        }
        std::fs::write(path, bytes).unwrap();
        values
    }

    #[test]
    fn mapped_rows_equal_the_loaded_table() -> Result<()> {
        let path = std::env::temp_dir().join(format!("sana-mapped-{}.safetensors", std::process::id()));
        let values = write_table(&path, 50, 6);
        let files = Arc::new(WeightFiles::open(&[path.clone()])?);
        let mapped = Arc::new(files.load_all(&Device::Cpu, DType::F32, &|n| if n == "emb.weight" { Placement::KeepMapped } else { Placement::Load })?);
        let loaded = Arc::new(files.load_all(&Device::Cpu, DType::F32, &|_| Placement::Load)?);
        assert!(mapped.tensors.is_empty() && mapped.mapped.contains_key("emb.weight"));
        let ids = Tensor::new(&[3u32, 0, 49, 3], &Device::Cpu)?;
        let a = mapped.root().get_rows((50, 6), "emb.weight")?.gather(&ids)?;
        let b = loaded.root().get_rows((50, 6), "emb.weight")?.gather(&ids)?;
        assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        assert_eq!(a.to_vec2::<f32>()?[2], values[49 * 6..50 * 6].to_vec());
        assert_eq!(mapped.tensor("emb.weight")?.unwrap().flatten_all()?.to_vec1::<f32>()?, values);
        let err = RowSource::Mapped(mapped.mapped["emb.weight"].clone()).gather(&Tensor::new(&[50u32], &Device::Cpu)?);
        assert_eq!(err.unwrap_err().code(), "SANA_INVALID_ARGUMENT");
        assert!(mapped.root().get_rows((50, 7), "emb.weight").is_err());
        std::fs::remove_file(path).ok();
        Ok(())
    }
}
