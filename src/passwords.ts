import { availableParallelism } from 'node:os'
import { randomBytes } from 'node:crypto'
import { hash, verify, parseOptions, type Options } from '@node-rs/argon2'
import { dictionary } from '@zxcvbn-ts/language-common'
import type { FastifyRequest } from 'fastify'
import type { Config } from './config.js'
import { AppError, unavailable } from './errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    passwords: Passwords
  }
}

const ARGON2ID = 2 // Algorithm.Argon2id: a const enum, which type-stripping loaders cannot inline

// 49k common passwords from zxcvbn-ts, compared case-insensitively.
const COMMON_PASSWORDS = new Set(dictionary['passwords-common'].map((p) => p.toLowerCase()))

// Stored hashes asking for more than this are refused, not computed: a planted hash with
// m=4GiB or t=1e6 would otherwise be a denial of service at sign-in.
const MAX_MEMORY_KIB = 1_048_576
const MAX_ITERATIONS = 50
const MAX_PARALLELISM = 16

// An unpaired UTF-16 surrogate (JSON allows "\ud800") cannot be stored or hashed as UTF-8: it would
// silently become U+FFFD, so texts holding one are refused.
export const UNPAIRED = /\p{Cs}/u

/** Why a new password is refused, or null when it passes the policy (length and common list; no composition rules). */
export function passwordPolicyError (password: string, minLength: number): string | null {
  const length = [...password].length
  if (length < minLength) return `password must be at least ${minLength} characters`
  if (length > 1024) return 'password must be at most 1024 characters'
  // Hashed as UTF-8, an unpaired surrogate would become U+FFFD: two passwords, one hash.
  if (UNPAIRED.test(password)) return 'password must be valid Unicode text'
  if (COMMON_PASSWORDS.has(password.toLowerCase())) return 'password is too common; choose one that is not on lists of common passwords'
  return null
}

/**
 * Runs argon2 work with bounded concurrency. Hashing is the service's most expensive step:
 * when the queue already holds more work than can be done within MAX_WAIT_MS, further
 * requests get a fast 503 instead of waiting in a queue that grows without bound.
 */
class HashQueue {
  private active = 0
  private readonly waiting: Array<() => void> = []
  private avgMs: number
  private measured = false

  constructor (
    private readonly concurrency: number,
    private readonly maxWaitMs: number,
    initialMs: number,
    private readonly histogram?: { observe: (seconds: number) => void }
  ) {
    this.avgMs = initialMs
  }

  get depth (): number { return this.waiting.length }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) {
      const expectedWait = ((this.waiting.length + 1) * this.avgMs) / this.concurrency
      if (expectedWait > this.maxWaitMs) {
        throw unavailable('Too many sign-ins in progress; retry shortly', Math.max(1, Math.ceil(expectedWait / 1000)))
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve))
    } else {
      this.active++
    }
    const start = performance.now()
    try {
      return await work()
    } finally {
      const ms = performance.now() - start
      // The first real hash replaces the estimate made at start, which may have run beside the
      // rest of the start-up: too high an estimate refused sign-ins of a burst right after start.
      this.avgMs = this.measured ? this.avgMs * 0.9 + ms * 0.1 : ms
      this.measured = true
      this.histogram?.observe(ms / 1000)
      const next = this.waiting.shift()
      if (next !== undefined) next() // hand the slot over; `active` stays the same
      else this.active--
    }
  }
}

export type Passwords = Awaited<ReturnType<typeof createPasswords>>

/**
 * The password again, for a change to a signed-in account (a stolen access token alone must not
 * be enough to take it over): returns if it matches the stored hash, else records the failure on
 * the request (metrics, audit) and throws 401 INVALID_CREDENTIALS.
 */
export async function requirePassword (passwords: Passwords, request: FastifyRequest, check: {
  stored: string, password: string, userId: string, sessionId: string, message?: string
}): Promise<void> {
  if (await passwords.verify(check.stored, check.password)) return
  request.event = { outcome: 'invalid_credentials', userId: check.userId, sessionId: check.sessionId }
  throw new AppError(401, 'INVALID_CREDENTIALS', check.message ?? 'The password is wrong')
}

/** `histogram` (optional) observes each hash or verify, in seconds. */
export async function createPasswords (config: Config, histogram?: { observe: (seconds: number) => void }) {
  const options: Options = {
    algorithm: ARGON2ID,
    memoryCost: config.ARGON2_MEMORY_KIB,
    timeCost: config.ARGON2_ITERATIONS,
    parallelism: config.ARGON2_PARALLELISM
  }
  // Unknown emails are verified against this hash so they cost (and answer) exactly like a wrong password.
  const dummyHash = await hash(randomBytes(32), options)
  // The first estimate of a hash's time: a verify, once the first hash has warmed things up.
  const start = performance.now()
  await verify(dummyHash, 'warm-up')
  const queue = new HashQueue(availableParallelism(), 1000, performance.now() - start, histogram)

  return {
    queue,
    hash: async (password: string) => await queue.run(async () => await hash(password, options)),

    /** Verifies against `stored`, or against the dummy hash when there is no user. */
    verify: async (stored: string | undefined, password: string): Promise<boolean> => {
      if (stored === undefined) {
        await queue.run(async () => await verify(dummyHash, password))
        return false
      }
      let p
      try {
        p = parseOptions(stored)
      } catch {
        return false
      }
      if (p.memoryCost > MAX_MEMORY_KIB || p.timeCost > MAX_ITERATIONS || p.parallelism > MAX_PARALLELISM) return false
      return await queue.run(async () => await verify(stored, password))
    },

    /** true when `stored` was made with other parameters than the configured ones (upgrade at sign-in). */
    needsRehash: (stored: string): boolean => {
      try {
        const p = parseOptions(stored)
        return p.algorithm !== ARGON2ID || p.memoryCost !== options.memoryCost ||
          p.timeCost !== options.timeCost || p.parallelism !== options.parallelism
      } catch {
        return true
      }
    }
  }
}
