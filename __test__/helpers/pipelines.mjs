// The two fixture pipelines most tests drive: sana-tiny, and sana-sprint-tiny sharing its tokenizer,
// text encoder and VAE (the Sprint fixture ships only its transformer and scheduler).
import { SanaPipeline } from '../../dist/index.js'
import { SANA_TINY, SPRINT_TINY } from './paths.mjs'

export async function loadFixturePipelines() {
  const pipe = await SanaPipeline.load(SANA_TINY)
  const sprint = await SanaPipeline.load(SPRINT_TINY, {
    components: { tokenizer: pipe.tokenizer, textEncoder: pipe.textEncoder, vae: pipe.vae },
  })
  return { pipe, sprint }
}
