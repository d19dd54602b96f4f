// Files tsc does not emit: the `sana serve` page, copied beside the compiled server (dist/server/page/).
import { cpSync } from 'node:fs'

cpSync(new URL('../src/server/page', import.meta.url), new URL('../dist/server/page', import.meta.url), { recursive: true })
