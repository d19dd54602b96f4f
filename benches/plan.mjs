// What the harness measures: model configs (real Sana / DC-AE / Gemma-2 shapes, or tiny ones for --quick),
// the random-weight folders they are written to, and the rows to run.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
export const repo = resolve(here, '..')
export const fixtures = process.env.SANA_FIXTURES ?? resolve(repo, '..', 'shared', 'fixtures')

// ─── configs ────────────────────────────────────────────────────────────────────────────────────────────

/** Sana 1.0 1024px transformers (Efficient-Large-Model/Sana_{600M,1600M}_1024px_diffusers/transformer). */
function sanaTransformer({ layers, heads, crossHeads, crossHeadDim }) {
  return {
    _class_name: 'SanaTransformer2DModel',
    attention_bias: false, attention_head_dim: 32, caption_channels: 2304,
    cross_attention_dim: crossHeads * crossHeadDim, cross_attention_head_dim: crossHeadDim, dropout: 0.0,
    guidance_embeds: false, in_channels: 32, interpolation_scale: null, mlp_ratio: 2.5,
    norm_elementwise_affine: false, norm_eps: 1e-6, num_attention_heads: heads,
    num_cross_attention_heads: crossHeads, num_layers: layers, out_channels: 32, patch_size: 1,
    qk_norm: null, sample_size: 32,
  }
}

/** mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers. */
function dcae({ channels, encoderLayers, decoderLayers }) {
  const blocks = ['ResBlock', 'ResBlock', 'ResBlock', 'EfficientViTBlock', 'EfficientViTBlock', 'EfficientViTBlock']
  const scales = [[], [], [], [5], [5], [5]]
  return {
    _class_name: 'AutoencoderDC',
    attention_head_dim: 32, decoder_act_fns: 'silu', decoder_block_out_channels: channels,
    decoder_block_types: blocks, decoder_conv_act_fn: 'relu', decoder_layers_per_block: decoderLayers,
    decoder_norm_types: 'rms_norm', decoder_qkv_multiscales: scales, downsample_block_type: 'conv',
    encoder_block_out_channels: channels, encoder_block_types: blocks, encoder_layers_per_block: encoderLayers,
    encoder_qkv_multiscales: scales, in_channels: 3, latent_channels: 32, scaling_factor: 0.41407,
    upsample_block_type: 'interpolate',
  }
}

/** google/gemma-2-2b-it as Sana ships it (Gemma2Model), in the transformers ≥ 5 key style of the fixtures. */
function gemma2({ layers, hidden, heads, kvHeads, headDim, inter, vocab, window }) {
  return {
    architectures: ['Gemma2Model'], model_type: 'gemma2',
    attention_bias: false, attention_dropout: 0.0, attn_logit_softcapping: 50.0, bos_token_id: 2, eos_token_id: 1,
    final_logit_softcapping: 30.0, head_dim: headDim, hidden_activation: 'gelu_pytorch_tanh', hidden_size: hidden,
    initializer_range: 0.02, intermediate_size: inter,
    layer_types: Array.from({ length: layers }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention')),
    max_position_embeddings: 8192, num_attention_heads: heads, num_hidden_layers: layers, num_key_value_heads: kvHeads,
    pad_token_id: 0, query_pre_attn_scalar: headDim, rms_norm_eps: 1e-6,
    rope_parameters: { rope_theta: 10000.0, rope_type: 'default' }, rope_theta: 10000.0, sliding_window: window,
    tie_word_embeddings: true, use_cache: false, vocab_size: vocab, dtype: 'float32',
  }
}

export const MODELS = {
  full: {
    'dit-600m': { kind: 'transformer', config: sanaTransformer({ layers: 28, heads: 36, crossHeads: 16, crossHeadDim: 72 }) },
    'dit-1.6b': { kind: 'transformer', config: sanaTransformer({ layers: 20, heads: 70, crossHeads: 20, crossHeadDim: 112 }) },
    // SANA1.5_4.8B_1024px: the 1.6B width at 60 layers with qk-norm, shipped in bf16 (so written in bf16: 9.6 GB).
    'dit-4.8b': {
      kind: 'transformer',
      weights: 'bf16',
      config: { ...sanaTransformer({ layers: 60, heads: 70, crossHeads: 20, crossHeadDim: 112 }), qk_norm: 'rms_norm_across_heads' },
    },
    'dcae-f32c32': {
      kind: 'vae',
      config: dcae({ channels: [128, 256, 512, 512, 1024, 1024], encoderLayers: [2, 2, 2, 3, 3, 3], decoderLayers: [3, 3, 3, 3, 3, 3] }),
    },
    // The full 256000-token vocabulary: the pipeline rows feed it the real Gemma tokenizer's ids.
    'gemma-2-2b': {
      kind: 'text_encoder',
      config: gemma2({ layers: 26, hidden: 2304, heads: 8, kvHeads: 4, headDim: 256, inter: 9216, vocab: 256000, window: 4096 }),
    },
  },
  quick: {
    'dit-tiny': { kind: 'transformer', config: sanaTransformer({ layers: 2, heads: 2, crossHeads: 4, crossHeadDim: 16 }) },
    'dcae-tiny': {
      kind: 'vae',
      config: dcae({ channels: [8, 16, 32, 32, 64, 64], encoderLayers: [1, 1, 1, 1, 1, 1], decoderLayers: [1, 1, 1, 1, 1, 1] }),
    },
    'gemma-tiny': {
      kind: 'text_encoder',
      config: gemma2({ layers: 2, hidden: 32, heads: 2, kvHeads: 1, headDim: 32, inter: 64, vocab: 256000, window: 128 }),
    },
  },
}
// The tiny transformer still reads 2304-wide Gemma embeddings in real Sana; here it must match gemma-tiny.
MODELS.quick['dit-tiny'].config.caption_channels = 32

/** Pipelines: which transformer / vae / text encoder folders they are made of. */
export const PIPELINES = {
  full: { 'sana-600m': { transformer: 'dit-600m', vae: 'dcae-f32c32', text_encoder: 'gemma-2-2b' } },
  quick: { 'sana-tiny': { transformer: 'dit-tiny', vae: 'dcae-tiny', text_encoder: 'gemma-tiny' } },
}

// ─── random-weight folders ──────────────────────────────────────────────────────────────────────────────

export const cacheDir = process.env.SANA_BENCH_CACHE ?? '/tmp/sana-bench-weights'

const WEIGHT_FILE = { transformer: 'diffusion_pytorch_model.safetensors', vae: 'diffusion_pytorch_model.safetensors', text_encoder: 'model.safetensors' }

// Float-typed keys whose values are whole numbers: JSON.stringify writes 50.0 as 50, which transformers ≥ 5's
// strict config dataclasses reject ("expected float, got int").
const FLOAT_KEYS = ['attn_logit_softcapping', 'final_logit_softcapping', 'rope_theta', 'dropout', 'attention_dropout']

export function configJson(config) {
  const re = new RegExp(`"(${FLOAT_KEYS.join('|')})": (-?\\d+)(?=[,\\n}])`, 'g')
  return JSON.stringify(config, null, 2).replace(re, '"$1": $2.0')
}

/**
 * `cacheDir/name/` with config.json and random safetensors, written once by the `random_checkpoint` example
 * (reused while config.json is unchanged). Returns the folder.
 */
export function ensureModel(name, model, log) {
  const { kind, config } = model
  const dir = join(cacheDir, name)
  const json = configJson(config)
  const weights = join(dir, WEIGHT_FILE[kind])
  const cfgPath = join(dir, 'config.json')
  if (existsSync(weights) && existsSync(cfgPath) && readFileSync(cfgPath, 'utf8') === json) return dir
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  writeFileSync(cfgPath, json)
  log(`writing random weights for ${name} into ${dir} …`)
  const extra = model.weights === 'bf16' ? ['bf16'] : []
  const r = spawnSync('cargo', ['run', '--quiet', '--release', '-p', 'sana-core', '--example', 'random_checkpoint', '--', kind, dir, ...extra], {
    cwd: repo,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  if (r.status !== 0) throw new Error(`random_checkpoint ${kind} ${dir} failed:\n${r.stderr}`)
  log(r.stdout.trim())
  return dir
}

/** A diffusers pipeline folder whose components are links to the model folders (tokenizer and scheduler from the fixtures). */
export function ensurePipeline(name, parts, modelDirs) {
  const dir = join(cacheDir, `pipeline-${name}`)
  rmSync(dir, { recursive: true, force: true })
  writePipelineShell(dir)
  for (const [slot, model] of Object.entries(parts)) symlinkSync(modelDirs[model], join(dir, slot))
  return dir
}

/** A pipeline folder's model_index.json, tokenizer and scheduler (the real Gemma tokenizer), from the fixtures. */
export function writePipelineShell(dir) {
  mkdirSync(dir, { recursive: true })
  const tiny = join(fixtures, 'sana-tiny')
  writeFileSync(join(dir, 'model_index.json'), readFileSync(join(tiny, 'model_index.json')))
  for (const slot of ['tokenizer', 'scheduler']) cpSync(join(tiny, slot), join(dir, slot), { recursive: true })
}

// ─── rows ───────────────────────────────────────────────────────────────────────────────────────────────

/**
 * One measurement. `latent` is [h, w] in latent pixels (image = 32×); `runs` is the most timed runs after
 * `warmup` untimed ones, cut short once the timed runs pass `budgetS` (at least one always runs).
 */
function row(model, what, extra) {
  return { model, warmup: 1, runs: 5, budgetS: 45, ...extra, what }
}

export function rows(mode) {
  if (mode === 'quick') {
    return [
      row('gemma-tiny', 'text encoder, 300 tokens', { kind: 'text_encoder', batch: 1, seqLen: 300 }),
      row('dit-tiny', 'DiT forward 256² (8×8)', { kind: 'transformer', batch: 1, latent: [8, 8], seqLen: 300 }),
      row('dit-tiny', 'DiT forward 256² (8×8)', { kind: 'transformer', batch: 2, latent: [8, 8], seqLen: 300 }),
      row('dit-tiny', 'DiT forward 256² (8×8)', { kind: 'transformer', batch: 2, latent: [8, 8], seqLen: 300, dtype: 'bfloat16' }),
      row('dcae-tiny', 'VAE decode 256²', { kind: 'vae', batch: 1, latent: [8, 8] }),
      row('sana-tiny', 'pipeline 256², 2 steps, CFG', { kind: 'pipeline', batch: 1, size: [256, 256], steps: 2, runs: 2 }),
    ]
  }
  // Ordered by priority (on 2 shared cores the whole list took 30 min with --compare); rows whose one
  // run takes a minute or more get no warm-up and a single run (the table shows both counts).
  const dit = { kind: 'transformer', seqLen: 300 }
  return [
    row('dit-600m', 'DiT forward 512² (16×16)', { ...dit, batch: 1, latent: [16, 16], budgetS: 30 }),
    row('dit-600m', 'DiT forward 512² (16×16)', { ...dit, batch: 2, latent: [16, 16], budgetS: 30 }),
    row('dit-600m', 'DiT forward 1024² (32×32)', { ...dit, batch: 2, latent: [32, 32], warmup: 0, runs: 1 }),
    row('dcae-f32c32', 'VAE decode 512²', { kind: 'vae', batch: 1, latent: [16, 16], warmup: 0, runs: 2, budgetS: 30 }),
    row('gemma-2-2b', 'text encoder, 300 tokens', { kind: 'text_encoder', batch: 1, seqLen: 300, runs: 3, budgetS: 30 }),
    row('dit-1.6b', 'DiT forward 512² (16×16)', { ...dit, batch: 2, latent: [16, 16], warmup: 0, runs: 1 }),
    row('dit-600m', 'DiT forward 512² (16×16)', { ...dit, batch: 4, latent: [16, 16], warmup: 0, runs: 1 }),
    row('sana-600m', 'pipeline 512², 2 steps, CFG', { kind: 'pipeline', batch: 1, size: [512, 512], steps: 2, warmup: 0, runs: 1 }),
    row('dcae-f32c32', 'VAE decode 1024²', { kind: 'vae', batch: 1, latent: [32, 32], warmup: 0, runs: 1 }),
    row('dit-1.6b', 'DiT forward 1024² (32×32)', { ...dit, batch: 2, latent: [32, 32], warmup: 0, runs: 1 }),
    row('sana-600m', 'pipeline 1024², 2 steps, CFG', { kind: 'pipeline', batch: 1, size: [1024, 1024], steps: 2, warmup: 0, runs: 1 }),
    // Half-precision weights on the CPU (issue 13): ours with bf16 weights beside PyTorch float32 — the same rows
    // as above with `dtype`, so each is compared (PSNR) with its float32 twin when both run.
    row('dit-600m', 'DiT forward 1024² (32×32)', { ...dit, batch: 2, latent: [32, 32], warmup: 0, runs: 1, dtype: 'bfloat16' }),
    row('dit-600m', 'DiT forward 512² (16×16)', { ...dit, batch: 2, latent: [16, 16], budgetS: 30, dtype: 'bfloat16' }),
    row('dcae-f32c32', 'VAE decode 512²', { kind: 'vae', batch: 1, latent: [16, 16], warmup: 0, runs: 2, budgetS: 30, dtype: 'bfloat16' }),
    row('dcae-f32c32', 'VAE decode 1024²', { kind: 'vae', batch: 1, latent: [32, 32], warmup: 0, runs: 1, dtype: 'bfloat16' }),
    row('gemma-2-2b', 'text encoder, 300 tokens', { kind: 'text_encoder', batch: 1, seqLen: 300, runs: 3, budgetS: 30, dtype: 'bfloat16' }),
    row('sana-600m', 'pipeline 1024², 2 steps, CFG', { kind: 'pipeline', batch: 1, size: [1024, 1024], steps: 2, warmup: 0, runs: 1, dtype: 'bfloat16' }),
    // 4.8B: ours only (PyTorch float32 would need its 19 GB of weights plus activations on a 24 GB machine).
    row('dit-4.8b', 'DiT forward 1024² (32×32)', { ...dit, batch: 1, latent: [32, 32], warmup: 0, runs: 1, dtype: 'bfloat16', torch: false }),
    // PyTorch in bfloat16 once, for the record (≈ 10× its float32 time on this CPU).
    row('dit-600m', 'DiT forward 512² (16×16)', { ...dit, batch: 1, latent: [16, 16], warmup: 0, runs: 1, dtype: 'bfloat16', torchDtype: 'bfloat16' }),
  ]
}
