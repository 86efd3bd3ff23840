import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'data/**', 'coverage/**', '.tap/**']
  }),
  {
    // A TypeBox schema and its static type share a name on purpose (SignUpBody).
    rules: { '@typescript-eslint/no-redeclare': 'off' }
  }
]
