/**
 * `sana pull <repo>`: download a pipeline into the Hugging Face cache (what `sana generate --model` and
 * `SanaPipeline.load` then use without a request) and print its local folder.
 */
import { resolveModel } from '../hub'
import { positionalArgs, stringOption, withInterrupt, type Command } from './command'
import { DownloadProgressView } from './progress'

export const pull: Command = {
  name: 'pull',
  summary: 'Download a Sana pipeline from the Hugging Face Hub into the local cache and print its folder.',
  usage: 'sana pull <repo> [options]',
  positionals: ['repo'],
  options: {
    revision: { type: 'string', valueName: 'R', description: 'Branch, tag or commit. Defaults to main.' },
    variant: { type: 'string', valueName: 'V', description: 'Weights variant, e.g. fp16 or bf16 (plain weights where a component has none). Defaults to the plain weights.' },
    offline: { type: 'boolean', description: 'Do not touch the network: only check that the cache holds the pipeline.' },
  },
  epilog: [
    'Online, pull asks the Hub where the revision points now and fetches only what changed; interrupted',
    'downloads resume. The cache is HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub), shared with Python.',
    '',
    'Example:',
    '  sana pull Efficient-Large-Model/Sana_600M_1024px_diffusers',
  ].join('\n'),

  async run(args) {
    const [repo] = positionalArgs(this, args)
    const revision = stringOption(args, 'revision')
    const variant = stringOption(args, 'variant')
    const offline = args.values.offline === true
    const view = new DownloadProgressView(process.stderr)
    const dir = await withInterrupt(async (signal) => {
      try {
        return await resolveModel(repo, { revision, variant, offline, refresh: !offline, signal, onProgress: view.update })
      } finally {
        view.finish()
      }
    })
    process.stdout.write(dir + '\n')
    return 0
  },
}
