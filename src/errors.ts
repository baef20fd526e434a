// Errors a user can act on. They carry a message meant to be read as is (what is wrong and how to fix it);
// the CLI prints it without a stack trace and exits with `exitCode`.
export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = new.target.name;
  }
}
