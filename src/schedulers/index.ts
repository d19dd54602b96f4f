/**
 * Schedulers: diffusers' samplers used by the Sana pipelines, chosen from a `scheduler_config.json` by
 * {@link schedulerFromConfig}.
 */
import { SanaError, invalidConfig } from '../errors'
import { DPMSolverMultistepScheduler } from './dpm-solver-multistep'
import { FlowMatchEulerDiscreteScheduler } from './flow-match-euler-discrete'
import { SCMScheduler } from './scm'
import type { Scheduler, SchedulerClassName } from './scheduler'

export { DPMSolverMultistepScheduler, type DPMSolverMultistepSchedulerConfig } from './dpm-solver-multistep'
export { FlowMatchEulerDiscreteScheduler, type FlowMatchEulerDiscreteSchedulerConfig } from './flow-match-euler-discrete'
export { SCMScheduler, type SCMSchedulerConfig, type SCMSetTimestepsOptions, type TrigFlowScales } from './scm'
export type { Scheduler, SchedulerClassName, SchedulerStepOptions, SchedulerStepOutput } from './scheduler'

const CLASSES: Record<SchedulerClassName, new (config: Record<string, unknown>) => Scheduler> = {
  DPMSolverMultistepScheduler,
  FlowMatchEulerDiscreteScheduler,
  SCMScheduler,
}

/**
 * Build the scheduler a diffusers `scheduler_config.json` describes, chosen by its `_class_name`. Keys the
 * chosen class does not read are ignored; missing keys take the class defaults. Throws `SANA_UNKNOWN_CLASS` for
 * another `_class_name` and `SANA_INVALID_CONFIG` for unsupported settings.
 *
 * @example
 * const text = await readFile('sana/scheduler/scheduler_config.json', 'utf8')
 * const scheduler = schedulerFromConfig(parsePythonJson(text))   // DPMSolverMultistepScheduler
 * scheduler.setTimesteps(20)
 */
export function schedulerFromConfig(config: unknown): Scheduler {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw invalidConfig('scheduler', 'config', 'an object', config)
  }
  const name = (config as Record<string, unknown>)._class_name
  if (typeof name !== 'string') throw invalidConfig('scheduler', '_class_name', 'a string', name)
  if (!Object.hasOwn(CLASSES, name)) {
    throw new SanaError(
      'SANA_UNKNOWN_CLASS',
      `Unknown scheduler class ${JSON.stringify(name)}; supported: ${Object.keys(CLASSES).join(', ')}`,
    )
  }
  return new CLASSES[name as SchedulerClassName](config as Record<string, unknown>)
}
