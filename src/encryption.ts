import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'
import { commaList, type Config } from './config.js'

// Secrets the service must read back (TOTP secrets) are sealed with AES-256-GCM under
// DATA_ENCRYPTION_KEY. Each sealed value names its key by id, so that a new key can come in while
// values sealed under a retired one (DATA_ENCRYPTION_KEYS_OLD) stay readable until re-sealed.

const IV_BYTES = 12
const TAG_BYTES = 16

interface Key { id: string, key: Buffer }

/** The AES key of a configured key (any text of 32 bytes or more) and its id, a hash that reveals nothing of it. */
function deriveKey (text: string): Key {
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(text, 'utf8'), Buffer.alloc(0), 'auth-service data encryption', 32))
  return { id: createHash('sha256').update('key id').update(key).digest('base64url').slice(0, 12), key }
}

export interface Sealed { data: Buffer, keyId: string | null }

export interface Sealer {
  /** The id of DATA_ENCRYPTION_KEY; null without one (values are kept as they are). */
  keyId: string | null
  seal: (plain: Buffer, context: string) => Sealed
  /** Throws when the key is not configured or the value was altered (or moved to another context). */
  open: (sealed: Sealed, context: string) => Buffer
}

/**
 * Seals under DATA_ENCRYPTION_KEY, opens under it or any of DATA_ENCRYPTION_KEYS_OLD. `context`
 * (a user id) is bound in as associated data: a value copied to another row does not open.
 */
export function createSealer (config: Pick<Config, 'DATA_ENCRYPTION_KEY' | 'DATA_ENCRYPTION_KEYS_OLD'>): Sealer {
  const current = config.DATA_ENCRYPTION_KEY === undefined ? null : deriveKey(config.DATA_ENCRYPTION_KEY)
  const keys = new Map<string, Buffer>()
  for (const k of [...(current !== null ? [current] : []), ...commaList(config.DATA_ENCRYPTION_KEYS_OLD).map(deriveKey)]) keys.set(k.id, k.key)

  return {
    keyId: current?.id ?? null,
    seal (plain, context) {
      if (current === null) return { data: plain, keyId: null }
      const iv = randomBytes(IV_BYTES)
      const cipher = createCipheriv('aes-256-gcm', current.key, iv).setAAD(Buffer.from(context))
      return { data: Buffer.concat([iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]), keyId: current.id }
    },
    open ({ data, keyId }, context) {
      if (keyId === null) return data
      const key = keys.get(keyId)
      if (key === undefined) throw new Error(`sealed under key ${keyId}, which is neither DATA_ENCRYPTION_KEY nor in DATA_ENCRYPTION_KEYS_OLD`)
      if (data.length < IV_BYTES + TAG_BYTES) throw new Error('sealed value too short')
      const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES }).setAAD(Buffer.from(context))
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES))
      return Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()])
    }
  }
}
