// Where the fixtures are: $SANA_FIXTURES, else ../shared/fixtures beside the repository.
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = fileURLToPath(new URL('.', import.meta.url))
export const REPO = resolve(here, '..', '..')
export const FIXTURES = process.env.SANA_FIXTURES ? resolve(process.env.SANA_FIXTURES) : resolve(REPO, '..', 'shared', 'fixtures')
export const SANA_TINY = join(FIXTURES, 'sana-tiny')
export const SPRINT_TINY = join(FIXTURES, 'sana-sprint-tiny')
export const SANA15_TRANSFORMER = join(FIXTURES, 'sana1.5-transformer-tiny')
export const SANA2K_TRANSFORMER = join(FIXTURES, 'sana-2k-transformer-tiny')

/** A writable copy of a fixture folder (or part of it), removed when the test ends. */
export function copyFixture(t, src, { filter } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sana-test-'))
  cpSync(src, dir, { recursive: true, filter: filter ?? (() => true) })
  // The fixtures are read-only; copies must be writable so tests can damage them.
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}
export const WAVE2 = join(FIXTURES, 'wave2')
