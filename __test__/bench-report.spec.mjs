// The benchmark report's pooling of --rounds (benches/report.mjs): what a row's time and peak RSS mean.
import test from 'ava'
import { combineRounds, markdown, stats } from '../benches/report.mjs'

const round = (timesS, peakRssMb, loadAvg) => ({ impl: 'ours', timesS, stepS: [], finite: true, peakRssMb, loadS: peakRssMb / 1000, wallS: 10, loadAvg })

test('rounds pool their timed runs, keep the largest peak RSS and span the load average', (t) => {
  const r = combineRounds([round([3, 9], 100, [1, 1.5]), round([4], 300, [1.5, 1.2]), round([5], 200, [1.2, 1.8])])
  t.deepEqual(r.timesS, [3, 9, 4, 5])
  t.is(r.rounds, 3)
  t.is(r.peakRssMb, 300)
  t.is(r.loadS, 0.2)
  t.is(r.wallS, 30)
  t.deepEqual(r.loadAvg, [1, 1.8])
  // The row's time is the median over every round's runs, not of the rounds' medians (6 and 4 and 5).
  t.is(stats({ batch: 1 }, r).median, 4.5)
})

test('one round is left as it is; a failed round fails the side', (t) => {
  const one = round([2], 50, [0, 0])
  t.is(combineRounds([one]), one)
  const r = combineRounds([one, { impl: 'ours', error: 'exit 1: out of memory', wallS: 1, loadAvg: [0, 0] }])
  t.regex(r.error, /^round 2 of 2: exit 1: out of memory/)
})

test('the table says how rounds were run only when there were several', (t) => {
  const info = { date: '2026-12-03T18:00:00.000Z', commit: 'abc', branch: 'main', cpu: 'cpu', cores: 2, memGiB: 24, threads: 2, node: 'v20', loadAvg: '1 1 1', cpuGemm: 'x' }
  const results = [{ model: 'm', what: 'w', batch: 1, warmup: 0, ours: round([1, 2], 10, [1, 1]) }]
  t.notRegex(markdown({ mode: 'full', compare: false, info: { ...info, rounds: 1 }, results }), /Rounds:/)
  t.regex(markdown({ mode: 'full', compare: false, info: { ...info, rounds: 3 }, results }), /Rounds: 3\. Each row ran 3 rounds/)
})
